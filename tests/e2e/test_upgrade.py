"""cluster upgrade from the older to the newer mirror version, with a workload kept
available the whole time."""

from __future__ import annotations

import json
import threading
import time

import pytest
import testinfra
import yaml

from provisioner.versions import SUPPORTED_KUBERNETES
from tests.e2e.conftest import Cluster, changed_tasks, create, make_cluster, provisioner
from tests.e2e.workloads import busybox_image

pytestmark = pytest.mark.e2e
OLD, NEW = SUPPORTED_KUBERNETES[-2], SUPPORTED_KUBERNETES[-1]

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm: {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 2}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: default}}
spec:
  minAvailable: 1
  selector: {{matchLabels: {{app: web}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: keep-me, namespace: default}}
data: {{answer: "42"}}
"""


@pytest.fixture(scope="module")
def cluster_u(tmp_path_factory: pytest.TempPathFactory):
    for lab, state in make_cluster(
        "e2eu", "192.168.245.0/24", nodes=3, control_planes=1, tmp=tmp_path_factory.mktemp("e2eu")
    ):
        spec = yaml.safe_load(lab.cluster_file.read_text())
        spec["kubernetes"]["version"] = OLD
        lab.cluster_file.write_text(yaml.safe_dump(spec))
        yield Cluster(lab, lab.cluster_file, state, create(lab, state))


def test_upgrade_keeps_the_workload_available(cluster_u: Cluster) -> None:
    args = ["-f", str(cluster_u.file), "--state-dir", str(cluster_u.state_dir)]
    cluster_u.apply(APP.format(image=busybox_image()))
    cluster_u.wait(
        "2 web replicas available",
        lambda: cluster_u.kubectl_json("get", "deploy", "web")["status"].get("availableReplicas") == 2,
        timeout=120,
    )
    svc = cluster_u.kubectl_json("get", "service", "web")["spec"]["clusterIP"]

    # skew checks refuse before anything changes
    bad = provisioner("cluster", "upgrade", *args, "--to", "v1.35.0", check=False)
    assert bad.returncode == 2 and "--to: v1.35.0 is not supported" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr

    # poll the service from a node (kube-proxy keeps serving while an API server restarts)
    row = cluster_u.lab.status()[0]
    host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_u.lab.key}")
    results: list[bool] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            results.append(host.run(f"curl -s -m 2 http://{svc}/").stdout.strip() == "ok")
            time.sleep(1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        provisioner("cluster", "upgrade", *args, "--to", NEW, timeout=1500)
    finally:
        stop.set()
        poller.join(timeout=10)
    assert len(results) > 20, results
    assert results.count(False) <= 2, f"{results.count(False)} of {len(results)} polls failed"

    versions = {
        n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
        for n in cluster_u.kubectl_json("get", "nodes")["items"]
    }
    assert set(versions.values()) == {NEW}, versions
    assert NEW in cluster_u.kubectl("version", "-o", "yaml")
    assert not any(n["spec"].get("unschedulable") for n in cluster_u.kubectl_json("get", "nodes")["items"])
    assert cluster_u.kubectl_json("get", "configmap", "keep-me")["data"] == {"answer": "42"}
    assert list((cluster_u.state_dir / "e2eu" / "backups").glob("*before-upgrade.db"))

    # create refuses the old version now, and converges on the new one with no change
    refused = provisioner("cluster", "create", *args, check=False)
    assert refused.returncode == 2 and "kubernetes.version: the cluster runs" in refused.stderr, refused.stderr
    spec = yaml.safe_load(cluster_u.file.read_text())
    spec["kubernetes"]["version"] = NEW
    cluster_u.file.write_text(yaml.safe_dump(spec))
    again = create(cluster_u.lab, cluster_u.state_dir)
    assert set(changed_tasks(again).values()) == {0}, changed_tasks(again)
    # a re-run of the upgrade finds nothing to do
    rerun = json.loads(provisioner("cluster", "upgrade", *args, "--to", NEW, "--output", "json", timeout=600).stdout)
    upgrade_runs = [r for r in rerun["results"] if r["playbook"] == "upgrade.yml"]
    assert upgrade_runs and all(s["changed"] == 0 for r in upgrade_runs for s in r["stats"].values()), upgrade_runs
