"""The API virtual IP on the HA lab (3 control planes + 1 worker; the lab's cluster file has an
`api_vip`): the admin kubeconfig points at it, cp1 holds it, and when cp1 stops kubectl
through the admin kubeconfig keeps working (a request every 0.5 s, at most 3 s of failures
while the VIP moves to cp2), a Deployment scaled during the outage converges, the other
kubelets keep renewing their leases through their local load balancers; then cp1 starts
again and rejoins (cp2 keeps the VIP: no preemption), `cluster validate` passes and a second
create changes nothing.

(This replaces test_ha's "one control plane down", which stopped cp2 because the admin
kubeconfig was pinned to cp1.)
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import testinfra
import yaml

from tests.e2e.conftest import Cluster, changed_tasks, create, kubectl_binary, provisioner
from tests.e2e.workloads import busybox_image

pytestmark = pytest.mark.e2e

INTERVAL = 0.5  # one request every half second
MAX_OUTAGE = 3.0  # seconds of failures allowed while the VIP moves

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: vip-scaled, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: vip-scaled}}}}
  template:
    metadata: {{labels: {{app: vip-scaled}}}}
    spec:
      tolerations:
        - {{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}
        # a replica on the stopped node is replaced 5 s after it goes NotReady (not 300 s)
        - {{key: node.kubernetes.io/unreachable, effect: NoExecute, tolerationSeconds: 5}}
        - {{key: node.kubernetes.io/not-ready, effect: NoExecute, tolerationSeconds: 5}}
      containers:
        - {{name: main, image: {image}, imagePullPolicy: Never, command: [sleep, "100000"]}}
"""


@dataclass
class Poller:
    """kubectl through the admin kubeconfig, one request started every INTERVAL seconds (each
    in its own thread, so a hanging request does not delay the next one)."""

    kubeconfig: str
    results: list[tuple[float, float, bool, str]] = field(default_factory=list)  # start, end, ok, error
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, t0: float) -> None:
        start = time.monotonic() - t0
        argv = [self.kubectl, "--kubeconfig", self.kubeconfig, "--request-timeout=5s"]
        try:
            proc = subprocess.run(
                [*argv, "get", "--raw", "/api/v1/namespaces/default"], capture_output=True, text=True, timeout=30
            )
            ok, error = proc.returncode == 0, proc.stderr.strip()[-200:]
        except subprocess.TimeoutExpired:
            ok, error = False, "no answer in 30 s"
        with self._lock:
            self.results.append((start, time.monotonic() - t0, ok, error))

    def _run(self) -> None:
        t0 = self.t0
        k = 0
        threads = []
        while not self._stop.is_set():
            t = threading.Thread(target=self._one, args=(t0,), daemon=True)
            t.start()
            threads.append(t)
            k += 1
            time.sleep(max(0.0, t0 + k * INTERVAL - time.monotonic()))
        for t in threads:
            t.join(timeout=40)

    def __enter__(self) -> Poller:
        self.kubectl = str(kubectl_binary())
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def outage(self) -> tuple[float, int, list[str]]:
        """From the start of the first failed request to the answer of the first good one started
        after the last failure (seconds), how many failed, and their errors."""
        rs = sorted(self.results)
        bad = [r for r in rs if not r[2]]
        if not bad:
            return 0.0, 0, []
        answers = [r[1] for r in rs if r[2] and r[0] > bad[-1][0]]
        end = min(answers) if answers else rs[-1][1]
        return end - bad[0][0], len(bad), [f"{r[0]:.1f}s: {r[3]}" for r in bad]


def _holder(cluster: Cluster, vip: str) -> list[str]:
    """The control planes that have the VIP on an interface."""
    running = {r["node"] for r in cluster.lab.status() if r["state"] == "running"}
    return [
        name
        for name in ("cp1", "cp2", "cp3")
        if name in running and _ssh(cluster, name).run(f"ip -o -4 addr show to {vip}/32").stdout.strip()
    ]


def _ssh(cluster: Cluster, name: str) -> Any:
    address = {r["node"]: r for r in cluster.lab.status()}[name]["address"]
    return testinfra.get_host(f"paramiko://root@{address}?ssh_identity_file={cluster.lab.key}")


def _hand_vip_to_cp1(cluster: Cluster, vip: str) -> None:
    """Restart keepalived where the VIP is: its priority-0 advertisement hands it to the healthy
    backup with the highest priority, cp1."""
    for _ in range(3):
        held = _holder(cluster, vip)
        if held == ["cp1"]:
            return
        for name in held:
            _ssh(cluster, name).run("systemctl restart keepalived")
        time.sleep(5)  # the VRRP backups settle
    cluster.wait("cp1 to hold the VIP alone", lambda: _holder(cluster, vip) == ["cp1"], timeout=30)


def _ready(cluster: Cluster, name: str) -> bool:
    node = cluster.kubectl_json("get", "node", name)
    return {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready") == "True"


def test_kubectl_through_the_vip_with_cp1_stopped(ha_cluster: Cluster) -> None:
    cluster = ha_cluster
    vip = cluster.spec()["api_vip"]["address"]
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]["cluster"]
    server = next(c for c in config["clusters"] if c["name"] == current)["cluster"]["server"]
    assert server == f"https://{vip}:6443", server
    # cp1 takes the VIP first (the highest VRRP priority, its keepalived starts first); with no
    # preemption it may have moved since (another test stopped cp1): hand it back to cp1
    _hand_vip_to_cp1(cluster, vip)
    cluster.wait("every node Ready", lambda: all(_ready(cluster, n) for n in ("cp1", "cp2", "cp3", "w1")))
    cluster.kubectl("delete", "deployment", "vip-scaled", "--ignore-not-found")
    cluster.apply(DEPLOYMENT.format(image=busybox_image()))

    with Poller(str(cluster.kubeconfig)) as poller:
        time.sleep(2)
        stopped_at = datetime.now(UTC)
        cluster.lab.stop_node("cp1")
        try:
            # scaled once cp1 is NotReady (the scheduler no longer places pods there)
            cluster.wait("cp1 NotReady", lambda: not _ready(cluster, "cp1"), timeout=180)
            cluster.kubectl("scale", "deployment/vip-scaled", "--replicas=3")
            cluster.wait(
                "the Deployment scaled with cp1 down to converge",
                lambda: cluster.kubectl_json("get", "deployment", "vip-scaled")["status"].get("availableReplicas") == 3,
                timeout=180,
            )
            assert _holder(cluster, vip) == ["cp2"]

            # the surviving kubelets renew their node leases through their local load balancers
            def leases_renewed() -> bool:
                for name in ("cp2", "cp3", "w1"):
                    lease = cluster.kubectl_json("get", "lease", "-n", "kube-node-lease", name)
                    renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
                    if renewed <= stopped_at:
                        return False
                return True

            cluster.wait("cp2, cp3 and w1 to renew their leases with cp1 down", leases_renewed, timeout=60)
            time.sleep(2)
        finally:
            poller_stop = time.monotonic()
            cluster.lab.start_node("cp1")
    outage, failed, errors = poller.outage()
    print(
        f"VIP failover (cp1 stopped): {len(poller.results)} requests over {poller_stop - poller.t0:.0f} s, "
        f"{failed} failed, outage {outage:.1f} s"
    )
    assert outage <= MAX_OUTAGE, f"{failed} requests failed over {outage:.1f} s: " + "; ".join(errors[:10])

    # cp1 rejoins: Ready, and it takes the VIP back once its API server is ready
    cluster.wait("cp1 Ready again", lambda: _ready(cluster, "cp1"), timeout=240)
    time.sleep(5)  # cp1's keepalived runs again: a VRRP backup; cp2 keeps the VIP (no preemption)
    assert _holder(cluster, vip) == ["cp2"]
    if cluster.spec().get("addons", {}).get("metrics_server", {}).get("enabled", True):
        # validate checks that metrics-server has read every kubelet: cp1's once it is back
        cluster.wait(
            "metrics of cp1 again",
            lambda: cluster.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/cp1", check=False),
            timeout=120,
        )
    cluster.kubectl("delete", "deployment", "vip-scaled", "--wait=false")
    proc = provisioner(
        "cluster", "validate", "-f", str(cluster.file), "--state-dir", str(cluster.state_dir), check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = create(cluster.lab, cluster.state_dir)
    assert set(changed_tasks(again).values()) == {0}, changed_tasks(again)
