"""cluster upgrade from the older to the newer mirror version, with a workload kept
available the whole time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import testinfra
import yaml

from provisioner.versions import SUPPORTED_KUBERNETES
from tests.e2e.conftest import PROVISIONER, Cluster, changed_tasks, create, make_cluster, provisioner
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


def _versions(cluster: Cluster) -> dict[str, str]:
    return {
        n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
        for n in cluster.kubectl_json("get", "nodes")["items"]
    }


def _cordoned(cluster: Cluster) -> list[str]:
    return [
        n["metadata"]["name"] for n in cluster.kubectl_json("get", "nodes")["items"] if n["spec"].get("unschedulable")
    ]


def _tree(pid: int) -> list[int]:
    """``pid`` and every process under it (ansible-runner starts ansible-playbook in a session
    of its own, so a process group would not hold them all)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return sorted(tree)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _upgrade_killed_while_draining_a_worker(cluster: Cluster, args: list[str]) -> None:
    """Run the upgrade as a user does and SIGKILL the whole controller (provisioner and the
    ansible-playbook and ssh processes under it, at once) as soon as the upgrade has cordoned
    a worker (its drain is under way, the control plane is done)."""
    proc = subprocess.Popen(
        [*PROVISIONER, "cluster", "upgrade", *args, "--to", NEW, "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if set(_cordoned(cluster)) - {"cp1"}:
                    break
            except AssertionError:
                pass  # the API server restarts while cp1 is upgraded
            time.sleep(0.5)
        assert proc.poll() is None, f"the upgrade ended (rc {proc.returncode}) before it drained a worker"
    finally:
        # freeze the tree (no process forks another meanwhile), then kill it all at once
        frozen: list[int] = []
        while (tree := _tree(proc.pid)) != frozen:
            for pid in tree:
                _signal(pid, signal.SIGSTOP)
            frozen = tree
        for pid in frozen:
            _signal(pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_chaos_refuses_to_kill_the_only_control_plane(cluster_u: Cluster, tmp_path: Path) -> None:
    """`cluster chaos -e kill-control-plane` on a cluster with one control plane: exit 2 with one
    line naming it, and every node untouched (no marker, no undo timer, its services running).
    (Here rather than in tests/e2e/ha: this cluster has the one control plane.)"""
    proc = provisioner(
        "cluster", "chaos", "-f", str(cluster_u.file), "--state-dir", str(cluster_u.state_dir),
        "--yes", "-e", "kill-control-plane", "--report", str(tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    # etcd's quorum is checked first: cp1 is also the one etcd member
    assert errors[0].startswith("error: kill-control-plane on cp1 would "), errors
    assert errors[0].endswith("nothing was changed"), errors
    for row in cluster_u.lab.status():
        host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_u.lab.key}")
        assert not host.file("/run/provisioner-chaos/active.json").exists, row["node"]
        assert host.run("systemctl is-active provisioner-chaos-undo.timer").stdout.strip() != "active"
        units = ["kubelet", "containerd", *(["etcd", "kube-apiserver"] if "control-plane" in row["roles"] else [])]
        for unit in units:
            assert host.service(unit).is_running, f"{unit} on {row['node']}"


def test_a_full_disk_at_the_snapshot_stops_the_upgrade_before_it_starts(cluster_u: Cluster) -> None:
    """etcd's snapshot before an upgrade does not fit on the member: the command stops with
    the reason, and no node was touched."""
    args = ["-f", str(cluster_u.file), "--state-dir", str(cluster_u.state_dir)]
    row = cluster_u.lab.status()[0]
    cp1 = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_u.lab.key}")
    cp1.check_output("mkdir -p /var/lib/etcd-backups && mount -t tmpfs -o size=1m tmpfs /var/lib/etcd-backups")
    try:
        proc = provisioner("cluster", "upgrade", *args, "--to", NEW, "-q", check=False, timeout=600)
    finally:
        cp1.check_output("umount /var/lib/etcd-backups")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("error: cp1: task 'Etcd backup | check that the snapshot fits' failed: "), proc.stderr
    assert "/var/lib/etcd-backups on cp1 has 1.0 MiB free, and a snapshot of etcd's" in first, first
    assert "Traceback" not in proc.stderr
    assert set(_versions(cluster_u).values()) == {OLD} and _cordoned(cluster_u) == []
    assert not list((cluster_u.state_dir / "e2eu" / "backups").glob("*before-upgrade.db"))
    assert yaml.safe_load(cluster_u.file.read_text())["kubernetes"]["version"] == OLD


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
        # the controller dies while a worker is drained; the same command continues
        _upgrade_killed_while_draining_a_worker(cluster_u, args)
        halfway = _versions(cluster_u)
        assert halfway["cp1"] == NEW and OLD in halfway.values(), halfway
        rerun = json.loads(
            provisioner("cluster", "upgrade", *args, "--to", NEW, "--output", "json", timeout=1500).stdout
        )
    finally:
        stop.set()
        poller.join(timeout=10)
    assert len(results) > 20, results
    assert results.count(False) <= 2, f"{results.count(False)} of {len(results)} polls failed"
    upgraded = [r for r in rerun["results"] if r["playbook"] == "upgrade.yml"]
    assert upgraded and upgraded[0]["stats"]["cp1"]["changed"] == 0, "the re-run upgraded cp1 again"

    versions = _versions(cluster_u)
    assert set(versions.values()) == {NEW}, versions
    assert NEW in cluster_u.kubectl("version", "-o", "yaml")
    assert _cordoned(cluster_u) == []
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
