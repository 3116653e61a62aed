"""`cluster chaos` on the HA lab (3 control planes with etcd + 1 worker; its cluster file sets
kubernetes.node_monitor_grace_period: 20, see conftest.py, so that a dead node is NotReady
within about 25 s). Each experiment runs once, as a user runs it (-o json --report), and is
checked from outside the command:
- the fault was real: the Node went NotReady, or the etcd leader changed;
- it was undone: over SSH, the units run again, no partition chain, no marker, no timer;
- the canary data is intact (and its ConfigMap kept the value it had before the first run);
- the verdict is what the numbers say (each limit re-checked against its measurement).
Then: the controller killed mid-experiment, the node's own timer undoes the fault (and a
second run refuses while it is active); a refusal (exit 2) that touches nothing.

Time: each experiment with the default duration (grace + 20 s) takes 2-3 minutes on the CI
machine; the whole file is measured in the issue note."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra

from tests.e2e.conftest import PROVISIONER, Cluster, provisioner

pytestmark = pytest.mark.e2e

NAMESPACE = "provisioner-chaos"
STOPPED = {
    "kill-node": ["kubelet", "kube-proxy", "containerd"],
    "kill-control-plane": [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "containerd",
        "etcd",
    ],
    "kill-etcd-leader": ["etcd"],
    "partition-node": [],
    "stop-kubelet": ["kubelet"],
}
RESULTS: dict[str, dict[str, Any]] = {}
# A worker goes NotReady 10-25 s after a fault (grace period 20 s, lease renewed every 10 s): 30 s
# faults show it (a control plane may take the controller manager's failover too: the default
# duration); `cluster validate` runs around the first experiment only (CI time)
FAST = ("--duration", "30", "--skip-validate")


def chaos(cluster: Cluster, tmp: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return provisioner(
        "cluster",
        "chaos",
        "-f",
        str(cluster.file),
        "--state-dir",
        str(cluster.state_dir),
        "--yes",
        "-o",
        "json",
        "--report",
        str(tmp),
        *args,
        check=False,
        timeout=timeout,
    )


def node_host(cluster: Cluster, name: str) -> Any:
    address = next(r["address"] for r in cluster.lab.status() if r["node"] == name)
    return testinfra.get_host(f"paramiko://root@{address}?ssh_identity_file={cluster.lab.key}")


def configmap(cluster: Cluster) -> str | None:
    out = cluster.kubectl("get", "configmap", "canary", "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(out)["data"]["index.html"] if out else None


def assert_verdict_matches_the_numbers(result: dict[str, Any]) -> None:
    from provisioner.spec import CHAOS_LIMITS

    m = result["measurements"]
    for name, kind in CHAOS_LIMITS.items():
        limit, value = result["limits"].get(name), m[name]
        check = next(c for c in result["checks"] if c["name"] == name)
        if limit is None:
            assert check["status"] == "off", check
        elif value is None:
            assert check["status"] in ("missed", "n/a"), check
        else:
            assert check["status"] == ("ok" if (value <= limit if kind == "max" else value >= limit) else "missed")
    for name in ("data_intact", "steady_state_after"):
        check = next(c for c in result["checks"] if c["name"] == name)
        assert check["status"] == ("ok" if m[name] else "missed"), check
    holds = all(c["status"] != "missed" for c in result["checks"])
    assert result["hypothesis_holds"] is holds and result["ok"] is holds


def assert_undone(cluster: Cluster, result: dict[str, Any]) -> None:
    assert result["left_behind"] == [], result["left_behind"]
    host = node_host(cluster, result["target"])
    for unit in STOPPED[result["experiment"]]:
        assert host.service(unit).is_running, f"{unit} is not running on {result['target']}"
    assert host.run("iptables -w -t raw -S PROVISIONER-CHAOS").rc != 0, "the partition chain is still there"
    assert not host.file("/run/provisioner-chaos/active.json").exists
    assert host.run("systemctl is-active provisioner-chaos-undo.timer").stdout.strip() != "active"


def assert_canary_kept(cluster: Cluster, seen: dict[str, str | None]) -> None:
    """The canary ConfigMap keeps the value it had after the first experiment that made it."""
    value = configmap(cluster)
    assert value
    seen.setdefault("before", value)
    assert value == seen["before"]


def run_experiment(cluster: Cluster, tmp: Path, experiment: str, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    proc = chaos(cluster, tmp, "-e", experiment, *args)
    assert proc.returncode in (0, 3), f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    assert (proc.returncode == 0) is result["hypothesis_holds"]
    result["_seconds"] = time.monotonic() - started
    RESULTS[experiment] = result
    assert Path(result["report"]["png"]).stat().st_size > 10_000
    assert json.loads(Path(result["report"]["json"]).read_text())["experiment"] == experiment
    assert_verdict_matches_the_numbers(result)
    assert result["measurements"]["data_intact"] is True
    if result["experiment"] != "kill-pod":
        assert_undone(cluster, result)
    return result


@pytest.fixture(scope="module")
def canary_value(ha_cluster: Cluster) -> dict[str, str | None]:
    return {}


def test_kill_pod(ha_cluster: Cluster, tmp_path: Path, canary_value: dict[str, str | None]) -> None:
    """The first run creates the canary and runs `cluster validate` before and after."""
    result = run_experiment(ha_cluster, tmp_path, "kill-pod")
    assert result["validate_after"] is True
    assert result["measurements"]["detection_s"] is not None  # the Deployment noticed the pod gone
    assert result["measurements"]["recovery_s"] is not None
    assert_canary_kept(ha_cluster, canary_value)


def test_kill_node(ha_cluster: Cluster, tmp_path: Path, canary_value: dict[str, str | None]) -> None:
    result = run_experiment(ha_cluster, tmp_path, "kill-node", *FAST)
    assert result["target"] == "w1"
    assert any(e["kind"] == "node-not-ready" and e["subject"] == "w1" for e in result["timeline"]["events"])
    assert_canary_kept(ha_cluster, canary_value)


def test_kill_control_plane_cp1(ha_cluster: Cluster, tmp_path: Path, canary_value: dict[str, str | None]) -> None:
    result = run_experiment(ha_cluster, tmp_path, "kill-control-plane", "--target", "cp1", "--skip-validate")
    assert any(e["kind"] == "node-not-ready" and e["subject"] == "cp1" for e in result["timeline"]["events"])
    assert_canary_kept(ha_cluster, canary_value)


def test_kill_etcd_leader(ha_cluster: Cluster, tmp_path: Path, canary_value: dict[str, str | None]) -> None:
    result = run_experiment(ha_cluster, tmp_path, "kill-etcd-leader", "--duration", "10", "--skip-validate")
    assert result["target"] == result["leader_before"]
    assert result["leader_after"] and result["leader_after"] != result["leader_before"]
    assert any(e["kind"] == "leader-elected" for e in result["timeline"]["events"])
    assert result["measurements"]["leader_election_s"] is not None
    assert_canary_kept(ha_cluster, canary_value)


def test_partition_node(ha_cluster: Cluster, tmp_path: Path, canary_value: dict[str, str | None]) -> None:
    result = run_experiment(ha_cluster, tmp_path, "partition-node", "--target", "w1", *FAST)
    assert any(e["kind"] == "node-not-ready" and e["subject"] == "w1" for e in result["timeline"]["events"])
    assert_canary_kept(ha_cluster, canary_value)
    # BIRD waits out its error wait time before it reconnects a session the partition dropped:
    # the tests after this one find every BGP session Established again
    ha_cluster.wait("every BGP session Established again", lambda: bgp_established(ha_cluster), timeout=300)


def bgp_established(cluster: Cluster) -> bool:
    for row in cluster.lab.status():
        out = node_host(cluster, row["node"]).check_output("birdc show protocols")
        if any(" BGP " in line and "Established" not in line for line in out.splitlines()):
            return False
    return True


def test_the_nodes_timer_undoes_when_the_controller_dies(ha_cluster: Cluster, tmp_path: Path) -> None:
    """stop-kubelet on w1 for 10 s; the command is killed (SIGKILL, with its children) once the
    fault is in: a second run refuses while it is active, naming it; then w1's own timer
    (10 s + the 20 s margin) starts the kubelet again and clears the marker."""
    from provisioner.defaults import CHAOS_TIMER_MARGIN_S

    w1 = node_host(ha_cluster, "w1")
    argv = [*PROVISIONER, "cluster", "chaos", "-f", str(ha_cluster.file), "--state-dir", str(ha_cluster.state_dir)]
    argv += ["--yes", "-o", "json", "--skip-validate", "-e", "stop-kubelet", "--target", "w1", "--duration", "10"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (w1.file("/run/provisioner-chaos/active.json").exists and not w1.service("kubelet").is_running):
            assert proc.poll() is None, "the command ended before the fault was in"
            assert time.monotonic() < deadline, "the fault never came"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = time.monotonic()
    refused = chaos(ha_cluster, tmp_path, "-e", "kill-pod")
    assert refused.returncode == 2, refused.stderr
    assert "w1: an earlier fault is still active (stop-kubelet of run" in refused.stderr
    deadline = killed_at + 10 + CHAOS_TIMER_MARGIN_S + 60
    while w1.file("/run/provisioner-chaos/active.json").exists or not w1.service("kubelet").is_running:
        assert time.monotonic() < deadline, "the node's timer did not undo the fault"
        time.sleep(1)
    journal = w1.check_output("journalctl -u provisioner-chaos-undo --no-pager -o cat")
    assert "undone by the node's own timer" in journal


def etcd_leader(cluster: Cluster) -> str:
    out = node_host(cluster, "cp1").check_output(
        ". /etc/profile.d/etcdctl.sh && etcdctl endpoint status --cluster -w json --command-timeout=5s"
    )
    status = json.loads(out)
    leader_id = status[0]["Status"]["leader"]
    for s in status:
        if s["Status"]["header"]["member_id"] == leader_id:
            address = s["Endpoint"].split("//")[1].split(":")[0]
            return next(r["node"] for r in cluster.lab.status() if r["address"] == address)
    raise AssertionError(f"no leader in {out}")


def test_a_refusal_changes_nothing(ha_cluster: Cluster, tmp_path: Path) -> None:
    """--target names a member that is not the leader: exit 2, one line, and no node carries a
    marker, a stopped unit or a partition chain afterwards, and the leader is the same."""
    leader = etcd_leader(ha_cluster)
    other = next(n for n in ("cp1", "cp2", "cp3") if n != leader)
    proc = chaos(ha_cluster, tmp_path, "-e", "kill-etcd-leader", "--target", other)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: --target {other}: the etcd leader is {leader}, not {other}; leave --target out or name {leader}; "
        "nothing was changed"
    ], proc.stderr
    for name in ("cp1", "cp2", "cp3", "w1"):
        host = node_host(ha_cluster, name)
        assert not host.file("/run/provisioner-chaos/active.json").exists
        assert host.run("iptables -w -t raw -S PROVISIONER-CHAOS").rc != 0
        for unit in ["kubelet", "containerd", *(["etcd", "kube-apiserver"] if name != "w1" else [])]:
            assert host.service(unit).is_running, f"{unit} on {name}"
    assert etcd_leader(ha_cluster) == leader


def test_report_times() -> None:
    """Not a check: prints what each experiment measured and took, for the issue note."""
    for name, r in RESULTS.items():
        m = r["measurements"]
        print(
            f"{name:20} on {r['target']:4} {r['_seconds']:6.0f}s wall  detection {m['detection_s']}  "
            f"recovery {m['recovery_s']}  api {m['api_availability_pct']}%  canary {m['canary_availability_pct']}%  "
            f"election {m['leader_election_s']}  holds {r['hypothesis_holds']}"
        )
