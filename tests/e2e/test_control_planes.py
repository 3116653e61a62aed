"""Day-2 on the lab for control planes: scale 1 -> 3 (etcd member add, API server
certificate and load balancers updated), remove a control plane (etcd member remove),
refuse a removal that would break etcd quorum, and scale the cleaned node back in."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import testinfra
import yaml

from tests.e2e.conftest import Cluster, changed_tasks, create, make_cluster, provisioner
from tests.e2e.workloads import busybox_image, check_workloads

pytestmark = pytest.mark.e2e

OBJECTS = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: keep-me, namespace: default}}
data: {{answer: "42"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keep-me, namespace: default}}
stringData: {{password: hunter2}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: keep-me, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: keep-me}}}}
  template:
    metadata: {{labels: {{app: keep-me}}}}
    spec:
      containers:
        - {{name: sleep, image: {image}, imagePullPolicy: Never, command: [sleep, "100000"]}}
"""
ETCDCTL = (
    "/usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt "
    "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key"
)


@pytest.fixture(scope="module")
def cluster_c(tmp_path_factory: pytest.TempPathFactory):
    """A lab of cp1..cp3 + w1; the cluster starts with cp1 and w1 only."""
    for lab, state in make_cluster(
        "e2ec", "192.168.244.0/24", nodes=4, control_planes=3, tmp=tmp_path_factory.mktemp("e2ec")
    ):
        full = yaml.safe_load(lab.cluster_file.read_text())
        small = dict(full, nodes=[n for n in full["nodes"] if n["name"] in ("cp1", "w1")])
        lab.cluster_file.write_text(yaml.safe_dump(small))
        cluster = Cluster(lab, lab.cluster_file, state, create(lab, state))
        cluster.apply(OBJECTS.format(image=busybox_image()))
        lab.cluster_file.write_text(yaml.safe_dump(full))
        yield cluster


def _args(cluster: Cluster) -> list[str]:
    return ["-f", str(cluster.file), "--state-dir", str(cluster.state_dir)]


def _host(cluster: Cluster, name: str) -> Any:
    row = {r["node"]: r for r in cluster.lab.status()}[name]
    return testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster.lab.key}")


def _members(cluster: Cluster) -> dict[str, list[str]]:
    out = _host(cluster, "cp1").check_output(f"{ETCDCTL} member list -w json")
    return {m.get("name", ""): m["peerURLs"] for m in json.loads(out)["members"]}


def _objects_intact(cluster: Cluster) -> None:
    assert cluster.kubectl_json("get", "configmap", "keep-me")["data"] == {"answer": "42"}
    secret = cluster.kubectl_json("get", "secret", "keep-me")
    assert base64.b64decode(secret["data"]["password"]) == b"hunter2"
    cluster.wait(
        "the keep-me Deployment available",
        lambda: cluster.kubectl_json("get", "deploy", "keep-me")["status"].get("availableReplicas") == 2,
    )


def _serves_from(cluster: Cluster, name: str) -> None:
    """kubectl from the controller straight to that node's API server: its certificate
    names the node's address, and it answers."""
    address = {r["node"]: r for r in cluster.lab.status()}[name]["address"]
    nodes = cluster.kubectl("--server", f"https://{address}:6443", "get", "nodes", "-o", "name")
    assert "node/cp1" in nodes


def test_scale_one_to_three_control_planes(cluster_c: Cluster) -> None:
    plan = provisioner("cluster", "scale", *_args(cluster_c), "--dry-run").stdout
    assert "etcd member add cp2, cp3" in plan
    result = json.loads(provisioner("cluster", "scale", *_args(cluster_c), "--output", "json", timeout=1500).stdout)
    changed = changed_tasks(result)
    # the worker only learns its new BGP peers and API servers (two files, two reloads)
    assert changed["w1"] <= 4, changed
    assert sorted(_members(cluster_c)) == ["cp1", "cp2", "cp3"]
    assert _host(cluster_c, "cp1").run(f"{ETCDCTL} endpoint health --cluster").rc == 0
    for name in ("cp1", "cp2", "cp3"):
        _serves_from(cluster_c, name)
    lb = _host(cluster_c, "w1").file("/etc/provisioner/api-lb/nginx.conf").content_string
    assert all(f"192.168.244.{10 + i}:6443" in lb for i in (1, 2, 3)), lb
    check_workloads(cluster_c, nodes=["cp1", "cp2", "cp3", "w1"])
    _objects_intact(cluster_c)
    again = json.loads(provisioner("cluster", "create", *_args(cluster_c), "--output", "json").stdout)
    assert set(changed_tasks(again).values()) == {0}, changed_tasks(again)


def test_remove_a_control_plane(cluster_c: Cluster) -> None:
    provisioner("cluster", "remove-node", "cp3", *_args(cluster_c), "--yes", timeout=900)
    assert "cp3" not in cluster_c.kubectl("get", "nodes")
    assert sorted(_members(cluster_c)) == ["cp1", "cp2"]
    assert _host(cluster_c, "cp1").run(f"{ETCDCTL} endpoint health --cluster").rc == 0
    cp3 = _host(cluster_c, "cp3")
    assert not cp3.service("etcd").is_running and not cp3.file("/var/lib/etcd").exists
    apiserver = _host(cluster_c, "cp1").file("/etc/systemd/system/kube-apiserver.service").content_string
    assert "192.168.244.13" not in apiserver
    lb = _host(cluster_c, "w1").file("/etc/provisioner/api-lb/nginx.conf").content_string
    assert "192.168.244.13:6443" not in lb and "192.168.244.12:6443" in lb, lb
    for name in ("cp1", "cp2"):
        _serves_from(cluster_c, name)
    _objects_intact(cluster_c)


def test_a_removal_that_would_break_quorum_is_refused(cluster_c: Cluster) -> None:
    # scale the cleaned cp3 back in (the file still lists it): it joins as a new member
    provisioner("cluster", "scale", *_args(cluster_c), timeout=1500)
    assert sorted(_members(cluster_c)) == ["cp1", "cp2", "cp3"]
    cp2 = _host(cluster_c, "cp2")
    cp2.run("systemctl stop etcd")
    try:
        refused = provisioner("cluster", "remove-node", "cp3", *_args(cluster_c), "--yes", check=False)
        assert refused.returncode != 0
        assert "would lose quorum" in refused.stderr + refused.stdout
    finally:
        cp2.run("systemctl start etcd")
    assert sorted(_members(cluster_c)) == ["cp1", "cp2", "cp3"]
    cluster_c.wait(
        "etcd healthy again", lambda: _host(cluster_c, "cp1").run(f"{ETCDCTL} endpoint health --cluster").rc == 0
    )
    _objects_intact(cluster_c)
