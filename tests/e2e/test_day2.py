"""Day-2 on the lab: etcd backup and restore, certificate check, reset and create again. This
cluster runs kube-proxy in nftables mode (the other labs run iptables): Services and DNS work
through it, and reset removes its tables."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import testinfra
import testinfra.backend
import testinfra.host
import yaml

from provisioner.lab.manager import DEFAULT_MIRROR
from tests.e2e.clean import WORKLOAD, leftovers
from tests.e2e.conftest import PROVISIONER, Cluster, changed_tasks, create, make_cluster, provisioner
from tests.e2e.workloads import busybox_image, check_workloads

pytestmark = pytest.mark.e2e

OBJECTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: keep-me, namespace: default}
data: {answer: "42"}
---
apiVersion: v1
kind: Secret
metadata: {name: keep-me, namespace: default}
stringData: {password: hunter2}
"""


@pytest.fixture(scope="module")
def cluster_d(tmp_path_factory: pytest.TempPathFactory):
    for lab, state in make_cluster(
        "e2ed", "192.168.246.0/24", nodes=2, control_planes=1, tmp=tmp_path_factory.mktemp("e2ed")
    ):
        spec = yaml.safe_load(lab.cluster_file.read_text())
        spec["kubernetes"]["proxy_mode"] = "nftables"
        lab.cluster_file.write_text(yaml.safe_dump(spec))
        yield Cluster(lab, lab.cluster_file, state, create(lab, state))


def _args(cluster: Cluster) -> list[str]:
    return ["-f", str(cluster.file), "--state-dir", str(cluster.state_dir)]


def test_services_and_dns_through_kube_proxy_in_nftables_mode(cluster_d: Cluster, tmp_path: Path) -> None:
    """kube-proxy in nftables mode: a ClusterIP Service answers from a pod and CoreDNS resolves
    (through the DNS Service), its rules are in the nftables table ip kube-proxy with no
    KUBE-SERVICES iptables chain, and `cluster validate` checks both."""
    check_workloads(cluster_d, nodes=["cp1", "w1"])
    spread_ip = cluster_d.kubectl_json("get", "service", "spread")["spec"]["clusterIP"]
    dns_ip = cluster_d.kubectl_json("get", "-n", "kube-system", "service", "kube-dns")["spec"]["clusterIP"]
    for row in cluster_d.lab.status():
        host = _node(cluster_d, row["node"])
        table = host.run("nft list table ip kube-proxy")
        assert table.rc == 0, f"{row['node']}: {table.stderr}"
        assert spread_ip in table.stdout and dns_ip in table.stdout, f"{row['node']}: {table.stdout[:2000]}"
        assert ":KUBE-SERVICES " not in host.check_output("iptables-save"), f"{row['node']}: iptables-mode rules"
    junit = tmp_path / "validate.xml"
    proc = provisioner("cluster", "validate", *_args(cluster_d), "--junit", str(junit), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = [
        case.get("name", "")
        for case in ElementTree.parse(junit).iter("testcase")
        if not any(child.tag in ("skipped", "failure", "error") for child in case)
    ]
    for check in ("kube_proxy_runs_in_the_files_mode", "kube_proxy_rules_where_its_mode_puts_them"):
        assert len([n for n in passed if n.startswith(f"test_{check}[")]) == 2, f"{check} did not pass on both nodes"


def test_scale_adds_a_worker_and_touches_little_else(cluster_d: Cluster) -> None:
    cluster_d.apply(OBJECTS)
    cluster_d.lab.up(nodes=3, control_planes=1, mirror_dir=DEFAULT_MIRROR, say=lambda m: None)  # w2 joins the lab
    proc = provisioner("cluster", "scale", *_args(cluster_d), "--output", "json")
    result = json.loads(proc.stdout)
    changed = changed_tasks(result)
    # existing nodes only learn their new BGP peer: the BIRD config and its reload
    assert changed["w1"] <= 2, changed
    assert changed["cp1"] <= 3, changed  # + the role label of the new node
    assert changed["w2"] > 10, changed
    check_workloads(cluster_d, nodes=["cp1", "w1", "w2"])
    assert cluster_d.kubectl_json("get", "configmap", "keep-me")["data"] == {"answer": "42"}
    again = json.loads(provisioner("cluster", "create", *_args(cluster_d), "--output", "json").stdout)
    assert set(changed_tasks(again).values()) == {0}, changed_tasks(again)


def test_remove_node_drains_cleans_and_updates_peers(cluster_d: Cluster) -> None:
    provisioner("cluster", "remove-node", "w2", *_args(cluster_d), "--yes")
    assert "w2" not in cluster_d.kubectl("get", "nodes")
    rows = {r["node"]: r for r in cluster_d.lab.status()}
    w2 = testinfra.get_host(f"paramiko://root@{rows['w2']['address']}?ssh_identity_file={cluster_d.lab.key}")
    assert not w2.service("kubelet").is_running and not w2.file("/etc/kubernetes").exists
    for name in ("cp1", "w1"):
        host = testinfra.get_host(f"paramiko://root@{rows[name]['address']}?ssh_identity_file={cluster_d.lab.key}")
        assert "peer_w2" not in host.check_output("birdc show protocols")
    # the ConfigMap made before is intact, and the file without w2 converges with no change
    assert cluster_d.kubectl_json("get", "configmap", "keep-me")["data"] == {"answer": "42"}
    spec = yaml.safe_load(cluster_d.file.read_text())
    spec["nodes"] = [n for n in spec["nodes"] if n["name"] != "w2"]
    cluster_d.file.write_text(yaml.safe_dump(spec))
    again = json.loads(provisioner("cluster", "create", *_args(cluster_d), "--output", "json").stdout)
    assert set(changed_tasks(again).values()) == {0}, changed_tasks(again)


def test_backup_then_restore_brings_a_deleted_configmap_back(cluster_d: Cluster) -> None:
    cluster_d.apply(OBJECTS)
    snapshot = Path(provisioner("cluster", "etcd", "backup", *_args(cluster_d)).stdout.strip().splitlines()[-1])
    assert snapshot.is_file() and snapshot.stat().st_size > 0
    cluster_d.kubectl("delete", "configmap", "keep-me")
    assert "keep-me" not in cluster_d.kubectl("get", "configmaps")
    provisioner("cluster", "etcd", "restore", str(snapshot), *_args(cluster_d), "--yes")
    data = cluster_d.wait("the ConfigMap back", lambda: cluster_d.kubectl_json("get", "configmap", "keep-me"))
    assert data["data"] == {"answer": "42"}
    secret = cluster_d.kubectl_json("get", "secret", "keep-me")
    assert base64.b64decode(secret["data"]["password"]) == b"hunter2"


def test_secrets_are_encrypted_at_rest(cluster_d: Cluster) -> None:
    cluster_d.apply(OBJECTS)
    row = cluster_d.lab.status()[0]
    host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_d.lab.key}")
    raw = host.run(
        "ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 "
        "--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
        "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key -w json get /registry/secrets/default/keep-me"
    )
    assert raw.rc == 0, raw.stderr
    stored = base64.b64decode(json.loads(raw.stdout)["kvs"][0]["value"])
    assert stored.startswith(b"k8s:enc:aescbc:v1:key1:"), stored[:40]
    assert b"hunter2" not in stored


def test_certs_check(cluster_d: Cluster) -> None:
    out = provisioner("cluster", "certs", "check", *_args(cluster_d), "--output", "json").stdout
    assert '"path": "apiserver.crt"' in out


def test_certs_renew_gives_new_dates_while_serving(cluster_d: Cluster) -> None:
    from cryptography import x509

    pki = cluster_d.lab.cluster.pki
    before = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    ca_before = (pki / "ca.crt").read_bytes()
    provisioner("cluster", "certs", "renew", *_args(cluster_d), "--yes")
    after = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    assert after.not_valid_after_utc > before.not_valid_after_utc
    assert after.serial_number != before.serial_number
    assert (pki / "ca.crt").read_bytes() == ca_before
    # the nodes serve the new certificate, and the cluster answers
    row = cluster_d.lab.status()[0]
    host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_d.lab.key}")
    served = host.check_output(
        "openssl s_client -connect 127.0.0.1:6443 </dev/null 2>/dev/null | openssl x509 -serial -noout"
    )
    assert served.split("=", 1)[1].strip().lstrip("0").upper() == f"{after.serial_number:X}".lstrip("0"), served
    assert "Ready" in cluster_d.kubectl("get", "nodes")


def _node(cluster: Cluster, name: str) -> Any:
    """A new connection to a lab node as root (not testinfra's cached one: the node may have
    restarted since)."""
    [row] = [r for r in cluster.lab.status() if r["node"] == name]
    backend = testinfra.backend.get_backend(f"paramiko://root@{row['address']}?ssh_identity_file={cluster.lab.key}")
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host


def _in_node(cluster: Cluster, name: str, *argv: str) -> None:
    """Run a command in a lab node without SSH (its sshd may be what is stopped): in the
    namespaces of the node's init, the first child of its systemd-nspawn."""
    [row] = [r for r in cluster.lab.status() if r["node"] == name]
    nspawn = int(row["pid"])
    init = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text().split()[0]
    subprocess.run(["nsenter", "--target", init, "--mount", "--pid", "--", *argv], check=True, timeout=60)


def test_ssh_problems_are_refused_in_preflight_naming_the_host(
    cluster_d: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SSH problem stops `cluster preflight` (exit 1) with a line that names the node and
    says what to do, before anything runs on a node: a user without passwordless sudo, a user
    the node does not let in, the cluster's key open to others, encrypted with no agent, or
    missing, and sshd stopped on a node. (Node addresses are IP addresses: no name to resolve.)"""
    spec = cluster_d.spec()
    address = {n["name"]: n["address"] for n in spec["nodes"]}
    w1 = _node(cluster_d, "w1")
    # pf logs in with the cluster's key, and may not sudo
    w1.check_output(
        "id pf >/dev/null 2>&1 || useradd -m -s /bin/sh pf; install -d -o pf -m 700 /home/pf/.ssh; "
        "install -o pf -m 600 /root/.ssh/authorized_keys /home/pf/.ssh/authorized_keys; rm -f /etc/sudoers.d/pf"
    )
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def preflight(edit: Callable[[dict[str, Any]], object], *command: str) -> subprocess.CompletedProcess[str]:
        data = copy.deepcopy(spec)
        edit(data)
        changed = tmp_path / "cluster.yaml"
        changed.write_text(yaml.safe_dump(data))
        args = ("cluster", *(command or ("preflight",)), "-f", str(changed), "--state-dir", str(cluster_d.state_dir))
        return provisioner(*args, check=False)

    def w1_as(user: str) -> Callable[[dict[str, Any]], object]:
        return lambda data: next(n for n in data["nodes"] if n["name"] == "w1").update(ssh_user=user)

    def key(path: Path) -> Callable[[dict[str, Any]], object]:
        return lambda data: data["ssh"].update(private_key=str(path))

    def refused(proc: subprocess.CompletedProcess[str], start: str) -> None:
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        assert f"error: {start}" in proc.stderr, proc.stderr

    refused(preflight(w1_as("pf")), f"w1 ({address['w1']}): sudo: pf (uid ")
    refused(preflight(w1_as("nobody-here")), f"w1 ({address['w1']}): ssh key: nobody-here@{address['w1']} refused")
    # with passwordless sudo pf gets in, and the facts (root's files) are read through sudo
    w1.check_output("echo 'pf ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/pf && chmod 440 /etc/sudoers.d/pf")
    through_sudo = preflight(w1_as("pf"), "create", "--dry-run")
    assert through_sudo.returncode == 0, through_sudo.stdout + through_sudo.stderr
    w1.check_output("rm -f /etc/sudoers.d/pf && userdel -r pf")

    lab_key = Path(spec["ssh"]["private_key"])
    loose, locked = tmp_path / "loose_ed25519", tmp_path / "locked_ed25519"
    for copied in (loose, locked):
        shutil.copy(lab_key, copied)
        copied.chmod(0o600)
    loose.chmod(0o644)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "sesame", "-f", str(locked)], check=True)
    for path, why in (
        (loose, "is mode 0644, open to other users"),
        (locked, "is encrypted (it has a passphrase) and no ssh-agent runs"),
        (tmp_path / "missing", "does not exist"),
    ):
        proc = preflight(key(path))
        for node in ("cp1", "w1"):
            refused(proc, f"{node} ({address[node]}): ssh key: ssh.private_key: {path} {why}")

    # sshd stopped: the port refuses connections
    w1.check_output("systemctl stop ssh.service")
    try:
        refused(
            preflight(lambda data: None),
            f"w1 ({address['w1']}): reachable: cannot connect to {address['w1']}:22: connection refused; "
            "is sshd running on w1",
        )
    finally:
        _in_node(cluster_d, "w1", "systemctl", "start", "ssh.service")
    back = cluster_d.wait("w1's sshd back", lambda: preflight(lambda data: None).returncode == 0, timeout=60)
    assert back


LOCAL_PATH_DIR = "/opt/local-path-provisioner"  # addons.local_path.path's default
KEEPER = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: keeper, namespace: default}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 16Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: keeper, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, "date > /data/kept; exec sleep 86400"]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: keeper}}}}]
"""


def test_reset_cleans_the_nodes_and_create_works_again(cluster_d: Cluster) -> None:
    """A reset of a cluster running a Deployment on every node, and a pod with a volume of
    the local-path add-on, leaves no process, network namespace, interface, packet filter
    rule, mount or add-on file (the volume's directory) of it on any node."""
    ca_before = (cluster_d.lab.cluster.pki / "ca.crt").read_bytes()
    nodes = [n["metadata"]["name"] for n in cluster_d.kubectl_json("get", "nodes")["items"]]
    cluster_d.apply(WORKLOAD.format(replicas=len(nodes), image=busybox_image()))

    def one_pod_per_node() -> bool:
        items = cluster_d.kubectl_json("get", "pods", "-l", "app=reset-me")["items"]
        running = {p["spec"].get("nodeName") for p in items if p["status"].get("phase") == "Running"}
        return running == set(nodes)

    cluster_d.wait("a reset-me pod Running on every node", one_pod_per_node, timeout=240)
    # the add-ons (issue 11): a claim that local-path has made a directory for, on its pod's node
    cluster_d.apply(KEEPER.format(image=busybox_image()))
    cluster_d.kubectl("wait", "--for=condition=Ready", "pod/keeper", "--timeout=180s", timeout=200)
    keeper_node = cluster_d.kubectl_json("get", "pod", "keeper")["spec"]["nodeName"]
    [keeper_address] = [r["address"] for r in cluster_d.lab.status() if r["node"] == keeper_node]
    keeper_host = testinfra.get_host(f"paramiko://root@{keeper_address}?ssh_identity_file={cluster_d.lab.key}")
    assert keeper_host.file(LOCAL_PATH_DIR).listdir(), "local-path made no directory for the claim"
    proc = provisioner("cluster", "reset", *_args(cluster_d), check=False)
    assert proc.returncode == 2 and "--yes" in proc.stderr  # no confirmation, no change
    provisioner("cluster", "reset", *_args(cluster_d), "--yes")
    assert list((cluster_d.state_dir / "e2ed" / "backups").glob("*before-reset.db"))
    for row in cluster_d.lab.status():
        host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_d.lab.key}")
        for svc in ("kubelet", "containerd", "etcd", "kube-apiserver", "bird", "api-lb"):
            assert not host.service(svc).is_running, f"{row['node']}: {svc} still running"
        for path in (
            "/etc/kubernetes",
            "/etc/cni",
            "/var/lib/etcd",
            "/var/lib/kubelet",
            "/var/lib/containerd",
            "/var/log/pods",
            "/opt/provisioner",
            "/usr/local/bin/kubelet",
            "/etc/systemd/system/kubelet.service",
            LOCAL_PATH_DIR,
        ):
            assert not host.file(path).exists, f"{row['node']}: {path} left behind"
        assert host.check_output("ip route show proto bird") == "", f"{row['node']}: BIRD routes left behind"
        # nft (to read the whole ruleset, kube-proxy's own tables too) is not on a lab node
        nft = host.run("command -v nft || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nftables")
        assert nft.rc == 0, nft.stderr
        assert leftovers(host) == [], f"{row['node']}: left behind"
        addon_processes = {"metrics-server", "local-path-prov"} & set(host.check_output("ps -eo comm=").split())
        assert not addon_processes, f"{row['node']}: {addon_processes} still running"
    assert (cluster_d.lab.cluster.pki / "ca.crt").read_bytes() == ca_before, "the CA was regenerated"


def test_a_node_dying_mid_create_fails_naming_it_and_a_rerun_converges(cluster_d: Cluster) -> None:
    """cp1 (the etcd member and API server) is stopped while `create` builds the cluster again
    on the reset nodes, once its etcd runs: the run fails naming cp1 and the task. With cp1
    back, a re-run converges: the same single etcd member (its data kept), the same CA."""
    ca_before = (cluster_d.lab.cluster.pki / "ca.crt").read_bytes()
    cp1 = _node(cluster_d, "cp1")
    etcdctl = (
        "ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 "
        "--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
        "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key"
    )
    creating = subprocess.Popen(
        [*PROVISIONER, "cluster", "create", *_args(cluster_d), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        cluster_d.wait(
            "etcd answering on cp1 during create",
            lambda: creating.poll() is None and cp1.run(f"{etcdctl} put /provisioner-e2e/kept yes").rc == 0,
            timeout=600,
            interval=1,
        )
        [member_before] = json.loads(cp1.check_output(f"{etcdctl} member list -w json"))["members"]
        cluster_d.lab.stop_node("cp1")
        _, err = creating.communicate(timeout=900)
    finally:
        if creating.poll() is None:
            creating.kill()
    assert creating.returncode == 1 and "Traceback" not in err, err
    # (a task's name may hold an apostrophe: "write the CNI configuration for this node's pod block")
    assert re.search(r"^error: cp1: task '.+' (unreachable|failed): \S", err, re.MULTILINE), err

    cluster_d.lab.start_node("cp1")
    create(cluster_d.lab, cluster_d.state_dir)
    cp1 = _node(cluster_d, "cp1")
    members = json.loads(cp1.check_output(f"{etcdctl} member list -w json"))["members"]
    assert [m["ID"] for m in members] == [member_before["ID"]], members
    assert cp1.check_output(f"{etcdctl} get --print-value-only /provisioner-e2e/kept") == "yes"
    assert (cluster_d.lab.cluster.pki / "ca.crt").read_bytes() == ca_before, "a new CA was made"
    assert cp1.file("/etc/kubernetes/pki/ca.crt").content == ca_before
    proc = provisioner("cluster", "validate", *_args(cluster_d), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
