"""Unit tests of the blast-radius guard (provisioner.chaos.blast): for each topology and
experiment, the target it picks or the refusal it names (exit 2, one line), from the
cluster file alone (``static``) and from what the cluster reports (``choose``)."""

from __future__ import annotations

import pytest

from provisioner.chaos import blast, experiments
from provisioner.spec import CHAOS_EXPERIMENTS, ClusterSpec, from_dict


def cluster(*nodes: tuple[str, list[str]], taints: dict[str, list[str]] | None = None) -> ClusterSpec:
    return from_dict(
        {
            "name": "unit",
            "nodes": [
                {"name": n, "address": f"192.0.2.{i + 10}", "roles": r, "taints": (taints or {}).get(n, [])}
                for i, (n, r) in enumerate(nodes)
            ],
        }
    )


CPE = ["etcd", "control-plane"]
SINGLE = cluster(("cp1", [*CPE, "worker"]))
ONE_CP = cluster(("cp1", CPE), ("w1", ["worker"]), ("w2", ["worker"]))
HA = cluster(("cp1", CPE), ("cp2", CPE), ("cp3", CPE), ("w1", ["worker"]))
CPS_ONLY = cluster(("cp1", [*CPE, "worker"]), ("cp2", [*CPE, "worker"]), ("cp3", [*CPE, "worker"]))
# etcd on its own nodes: killing a control plane costs no member
EXTERNAL_ETCD = cluster(
    ("cp1", ["control-plane"]),
    ("cp2", ["control-plane"]),
    ("e1", ["etcd"]),
    ("e2", ["etcd"]),
    ("e3", ["etcd"]),
    ("w1", ["worker"]),
)


def live(spec: ClusterSpec, leader: str | None = "cp1", **changes: dict) -> blast.Topology:
    """The topology of the file as the cluster would report it, one canary pod per node that can
    take one; ``changes``: node -> NodeState fields, or ``etcd={member: healthy}``, ``active=``."""
    topo = blast.from_spec(spec)
    nodes = {}
    for name, st in topo.nodes.items():
        fields = {"canary_pods": 1 if st.canary_may_run else 0, **changes.get(name, {})}
        nodes[name] = blast.NodeState(**{**st.__dict__, **fields})
    etcd = {**topo.etcd_healthy, **changes.get("etcd", {})}
    return blast.Topology(nodes, etcd, leader, changes.get("active", {}))


E = experiments.get


@pytest.mark.parametrize(
    ("spec", "experiment", "target", "refusal"),
    [
        # a single node: nothing but kill-pod leaves the cluster (or the canary) standing
        (SINGLE, "kill-pod", "auto", None),
        (SINGLE, "kill-node", "auto", blast.TargetRefused),
        (SINGLE, "kill-control-plane", "auto", blast.QuorumRefused),
        (SINGLE, "kill-etcd-leader", "auto", blast.QuorumRefused),
        (SINGLE, "partition-node", "auto", blast.QuorumRefused),
        (SINGLE, "stop-kubelet", "auto", blast.NoCanaryNodeRefused),
        # one control plane and two workers
        (ONE_CP, "kill-pod", "auto", None),
        (ONE_CP, "kill-node", "auto", None),
        (ONE_CP, "kill-node", "w2", None),
        (ONE_CP, "kill-node", "cp1", blast.TargetRefused),
        (ONE_CP, "kill-control-plane", "auto", blast.QuorumRefused),
        (ONE_CP, "kill-control-plane", "cp1", blast.QuorumRefused),
        (ONE_CP, "kill-etcd-leader", "auto", blast.QuorumRefused),
        (ONE_CP, "partition-node", "cp1", blast.QuorumRefused),
        (ONE_CP, "partition-node", "w1", None),
        (ONE_CP, "stop-kubelet", "cp1", None),  # the API server keeps running
        # the HA lab: 3 control planes with etcd + 1 worker
        (HA, "kill-node", "auto", None),
        (HA, "kill-node", "w1", None),  # the canary tolerates the control-plane taint
        (HA, "kill-control-plane", "cp1", None),
        (HA, "kill-control-plane", "w1", blast.TargetRefused),
        (HA, "kill-etcd-leader", "auto", None),
        (HA, "partition-node", "cp2", None),
        (HA, "stop-kubelet", "auto", None),
        (HA, "kill-pod", "nope", blast.TargetRefused),
        # control planes only
        (CPS_ONLY, "kill-node", "auto", blast.TargetRefused),
        (CPS_ONLY, "kill-control-plane", "auto", None),
        (CPS_ONLY, "partition-node", "auto", None),
        # separate etcd nodes
        (EXTERNAL_ETCD, "kill-control-plane", "cp2", None),
        (EXTERNAL_ETCD, "kill-node", "e1", blast.TargetRefused),
        (EXTERNAL_ETCD, "kill-etcd-leader", "e2", None),
        (EXTERNAL_ETCD, "kill-control-plane", "e1", blast.TargetRefused),
    ],
)
def test_static(spec: ClusterSpec, experiment: str, target: str, refusal: type[blast.Refused] | None) -> None:
    if refusal is None:
        blast.static(spec, E(experiment), target)
    else:
        with pytest.raises(refusal) as exc:
            blast.static(spec, E(experiment), target)
        assert exc.value.exit_code == 2
        assert len(exc.value.lines()) == 1 and exc.value.lines()[0].endswith("nothing was changed")


def test_static_one_control_plane_names_the_reason() -> None:
    with pytest.raises(blast.QuorumRefused) as exc:
        blast.static(ONE_CP, E("kill-control-plane"), "auto")
    assert str(exc.value) == (
        "kill-control-plane on cp1 would leave 0 of 1 etcd members, below the quorum of 1: etcd would stop serving; "
        "nothing was changed"
    )


def test_static_last_control_plane_without_etcd() -> None:
    one_cp = cluster(("cp1", ["control-plane"]), ("e1", ["etcd"]), ("w1", ["worker"]))
    with pytest.raises(blast.LastControlPlaneRefused, match="the last control plane serving the API"):
        blast.static(one_cp, E("kill-control-plane"), "cp1")


def test_static_canary_needs_a_node_besides_the_target() -> None:
    # w2 is tainted for batch work: killing w1 leaves the canary only cp1 (tolerated) ...
    spec = cluster(("cp1", CPE), ("w1", ["worker"]), ("w2", ["worker"]), taints={"w2": ["dedicated=batch:NoSchedule"]})
    blast.static(spec, E("kill-node"), "w1")
    # ... but with cp1 a tainted-for-batch worker too, nothing is left
    spec = cluster(
        ("cp1", CPE),
        ("w1", ["worker"]),
        ("w2", ["worker"]),
        taints={"w2": ["dedicated=batch:NoSchedule"], "cp1": ["x=y:NoExecute"]},
    )
    with pytest.raises(blast.NoCanaryNodeRefused, match="kill-node on w1 would leave the canary no node besides w1"):
        blast.static(spec, E("kill-node"), "w1")


@pytest.mark.parametrize(
    ("spec", "experiment", "target", "expected"),
    [
        (HA, "kill-pod", "auto", "cp1"),
        (HA, "kill-pod", "w1", "w1"),
        (HA, "kill-node", "auto", "w1"),
        (HA, "kill-control-plane", "auto", "cp2"),  # not the etcd leader (cp1)
        (HA, "kill-control-plane", "cp1", "cp1"),
        (HA, "kill-etcd-leader", "auto", "cp1"),
        (HA, "kill-etcd-leader", "cp1", "cp1"),
        (HA, "partition-node", "auto", "w1"),
        (HA, "stop-kubelet", "auto", "w1"),
        (ONE_CP, "kill-node", "auto", "w1"),
        (CPS_ONLY, "partition-node", "auto", "cp2"),  # no worker: a member that is not the leader
    ],
)
def test_choose(spec: ClusterSpec, experiment: str, target: str, expected: str) -> None:
    assert blast.choose(E(experiment), target, live(spec)) == expected


def test_choose_etcd_leader_must_be_the_leader() -> None:
    with pytest.raises(blast.TargetRefused, match="the etcd leader is cp3, not cp1; leave --target out or name cp3"):
        blast.choose(E("kill-etcd-leader"), "cp1", live(HA, leader="cp3"))


def test_choose_no_leader_is_no_steady_state() -> None:
    with pytest.raises(blast.SteadyStateRefused, match="no etcd member reports a leader"):
        blast.choose(E("kill-etcd-leader"), "auto", live(HA, leader=None))


def test_choose_quorum_counts_members_already_down() -> None:
    topo = live(HA, etcd={"cp3": False})
    with pytest.raises(blast.QuorumRefused) as exc:
        blast.choose(E("kill-control-plane"), "cp1", topo)
    assert "would leave 1 of 3 etcd members (cp3 already down), below the quorum of 2" in str(exc.value)
    # a fault that leaves etcd alone is still allowed
    assert blast.choose(E("stop-kubelet"), "cp1", topo) == "cp1"


def test_choose_last_serving_control_plane() -> None:
    two = cluster(("cp1", ["control-plane"]), ("cp2", ["control-plane"]), ("e1", ["etcd"]), ("w1", ["worker"]))
    topo = live(two, leader="e1", cp2={"ready": False})
    with pytest.raises(
        blast.LastControlPlaneRefused, match="kill-control-plane on cp1 would stop the last control plane"
    ):
        blast.choose(E("kill-control-plane"), "cp1", topo)


def test_choose_canary_must_keep_a_node() -> None:
    topo = live(ONE_CP, w2={"unschedulable": True})  # w2 cordoned; cp1 keeps the canary (taint tolerated)
    assert blast.choose(E("kill-node"), "w1", topo) == "w1"
    topo = live(ONE_CP, w2={"unschedulable": True}, cp1={"taints": ("dedicated=infra:NoSchedule",)})
    with pytest.raises(blast.NoCanaryNodeRefused):
        blast.choose(E("kill-node"), "w1", topo)


def test_choose_kill_pod_needs_a_canary_pod_there() -> None:
    topo = live(HA, w1={"canary_pods": 0})
    with pytest.raises(blast.TargetRefused, match="no canary pod runs on w1 \\(they run on cp1, cp2, cp3\\)"):
        blast.choose(E("kill-pod"), "w1", topo)


def test_an_active_fault_refuses_any_experiment() -> None:
    topo = live(HA, active={"w1": "kill-node of run 20260101-000000"})
    for name in CHAOS_EXPERIMENTS:
        with pytest.raises(blast.FaultActiveRefused, match="w1: an earlier fault is still active \\(kill-node of run"):
            blast.choose(E(name), "auto", topo)


def test_steady_state() -> None:
    blast.steady_state(live(HA), [])
    with pytest.raises(blast.SteadyStateRefused) as exc:
        blast.steady_state(live(HA, w1={"ready": False}, etcd={"cp2": False}), ["the canary does not answer"])
    assert str(exc.value) == (
        "the steady state does not hold: w1 not Ready; the canary does not answer; etcd member cp2 unhealthy; "
        "nothing was changed"
    )
