"""The blast-radius guard: pure decisions over the cluster file and what the cluster reports.

Two steps, both before anything is touched:
- ``static``: the cluster file alone (no SSH, no API): the target exists and suits the
  experiment, and the fault cannot cost etcd quorum or the last control plane even when
  everything else is healthy;
- ``choose``: the live topology (Nodes, etcd health and leader, canary pods, faults still
  active on the nodes) picks the target for ``auto`` and checks the same with what is really
  up, and that the canary keeps a node to run on;
and ``steady_state`` before the injection. Each refusal is an InputError (exit 2) of one
line that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.chaos.experiments import Experiment, Target
from provisioner.errors import InputError
from provisioner.spec import ClusterSpec

CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane:NoSchedule"
# taints the canary tolerates: it runs on control planes too, so that killing a worker leaves it a node
CANARY_TOLERATES = frozenset({CONTROL_PLANE_TAINT})
AUTO = "auto"


class Refused(InputError):
    """The experiment would do more harm than it is allowed to; nothing was changed."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; nothing was changed")


class TargetRefused(Refused):
    """--target does not name a node this experiment can hit."""


class QuorumRefused(Refused):
    """The fault would leave etcd without a quorum of healthy members."""


class LastControlPlaneRefused(Refused):
    """The fault would leave no control plane serving the API."""


class NoCanaryNodeRefused(Refused):
    """The fault would leave the canary no node to run on."""


class FaultActiveRefused(Refused):
    """An earlier fault is still active on a node."""


class SteadyStateRefused(Refused):
    """The steady state does not hold before the injection."""


@dataclass(frozen=True)
class NodeState:
    """One node as the cluster reports it (Node object, canary pods)."""

    name: str
    roles: tuple[str, ...]
    ready: bool | None = True  # None: not known (no Node object)
    unschedulable: bool = False
    taints: tuple[str, ...] = ()
    canary_pods: int = 0

    @property
    def canary_may_run(self) -> bool:
        hard = {t for t in self.taints if t.rsplit(":", 1)[-1] in ("NoSchedule", "NoExecute")}
        return bool(self.ready) and not self.unschedulable and hard <= CANARY_TOLERATES


@dataclass(frozen=True)
class Topology:
    nodes: dict[str, NodeState]
    etcd_healthy: dict[str, bool]  # member -> healthy
    etcd_leader: str | None
    active: dict[str, str] = field(default_factory=dict)  # node -> the fault still active there


def spec_taints(spec: ClusterSpec, name: str) -> tuple[str, ...]:
    """The taints a node registers with (node role: a control plane that is not a worker
    gets the control-plane taint)."""
    node = spec.node(name)
    extra = (CONTROL_PLANE_TAINT,) if "control-plane" in node.roles and "worker" not in node.roles else ()
    return (*node.taints, *extra)


def from_spec(spec: ClusterSpec) -> Topology:
    """The topology the cluster file describes, everything healthy (for the static step)."""
    return Topology(
        nodes={n.name: NodeState(n.name, tuple(n.roles), True, False, spec_taints(spec, n.name)) for n in spec.nodes},
        etcd_healthy={n.name: True for n in spec.etcd_members},
        etcd_leader=None,
    )


def _role_list(topo: Topology, role: str) -> list[str]:
    return [n.name for n in topo.nodes.values() if role in n.roles]


def _check_target_kind(e: Experiment, node: NodeState, topo: Topology) -> None:
    roles = node.roles
    if e.target is Target.WORKER and ("control-plane" in roles or "etcd" in roles):
        other = "kill-control-plane" if "control-plane" in roles else "kill-etcd-leader or partition-node"
        raise TargetRefused(
            f"--target {node.name}: {e.name} hits workers, and {node.name} is {'/'.join(roles)}; use {other}"
        )
    if e.target is Target.CONTROL_PLANE and "control-plane" not in roles:
        raise TargetRefused(f"--target {node.name}: {node.name} is not a control plane; use kill-node or stop-kubelet")
    if e.target is Target.ETCD_LEADER:
        if "etcd" not in roles:
            raise TargetRefused(f"--target {node.name}: {node.name} is not an etcd member")
        if topo.etcd_leader is not None and node.name != topo.etcd_leader:
            raise TargetRefused(
                f"--target {node.name}: the etcd leader is {topo.etcd_leader}, not {node.name}; "
                f"leave --target out or name {topo.etcd_leader}"
            )


def _stops_etcd(e: Experiment, node: NodeState) -> bool:
    return "etcd" in node.roles and (e.etcd or e.partition)


def _stops_api(e: Experiment, node: NodeState) -> bool:
    return "control-plane" in node.roles and (e.target is Target.CONTROL_PLANE or e.partition)


def _check_blast(e: Experiment, node: NodeState, topo: Topology) -> None:
    if _stops_etcd(e, node):
        members = sorted(topo.etcd_healthy)
        healthy = [m for m, ok in topo.etcd_healthy.items() if ok and m != node.name]
        quorum = len(members) // 2 + 1
        if len(healthy) < quorum:
            down = [m for m, ok in topo.etcd_healthy.items() if not ok]
            why = f" ({', '.join(down)} already down)" if down else ""
            raise QuorumRefused(
                f"{e.name} on {node.name} would leave {len(healthy)} of {len(members)} etcd members{why}, "
                f"below the quorum of {quorum}: etcd would stop serving"
            )
    if _stops_api(e, node):
        serving = [n for n in _role_list(topo, "control-plane") if n != node.name and topo.nodes[n].ready]
        if not serving:
            raise LastControlPlaneRefused(f"{e.name} on {node.name} would stop the last control plane serving the API")
    affected = {node.name} if e.node_side else set()
    homes = [n.name for n in topo.nodes.values() if n.canary_may_run and n.name not in affected]
    if not homes:
        where = f"besides {node.name} " if affected else ""
        raise NoCanaryNodeRefused(
            f"{e.name} on {node.name} would leave the canary no node {where}to run on "
            "(a Ready, schedulable node without taints other than the control-plane one)"
        )


def _auto(e: Experiment, topo: Topology) -> str:
    nodes = list(topo.nodes.values())
    with_canary = [n for n in nodes if n.canary_pods]
    workers = [n for n in nodes if "control-plane" not in n.roles and "etcd" not in n.roles]
    if e.target is Target.POD:
        if not with_canary:
            raise SteadyStateRefused("no canary pod runs yet")
        return with_canary[0].name
    if e.target is Target.ETCD_LEADER:
        if topo.etcd_leader is None:
            raise SteadyStateRefused("no etcd member reports a leader")
        return topo.etcd_leader
    if e.target is Target.CONTROL_PLANE:
        cps = [n for n in nodes if "control-plane" in n.roles]
        pick = [n for n in cps if n.name != topo.etcd_leader] or cps
        return pick[0].name
    if e.target is Target.WORKER and not workers:
        raise TargetRefused(f"{e.name} hits a worker, and this cluster has none; use kill-control-plane")
    pool = [n for n in workers if n.canary_pods] or workers
    if not pool:  # partition-node, stop-kubelet on a cluster of control planes only
        pool = [n for n in nodes if n.name != topo.etcd_leader] or nodes
    return pool[0].name


def no_fault_active(topo: Topology) -> None:
    """A node's marker names a fault not undone yet: one at a time."""
    if topo.active:
        node, what = sorted(topo.active.items())[0]
        raise FaultActiveRefused(
            f"{node}: an earlier fault is still active ({what}); wait for its timer, or undo it now "
            "with `provisioner cluster chaos --undo`"
        )


def choose(e: Experiment, target: str, topo: Topology) -> str:
    """The node the fault hits (for kill-pod: the node whose canary pod is deleted)."""
    no_fault_active(topo)
    name = _auto(e, topo) if target == AUTO else target
    if name not in topo.nodes:
        raise TargetRefused(f"--target {name}: no such node in the cluster file ({', '.join(topo.nodes)})")
    node = topo.nodes[name]
    _check_target_kind(e, node, topo)
    if e.target is Target.POD and not node.canary_pods:
        running = ", ".join(n.name for n in topo.nodes.values() if n.canary_pods) or "no node"
        raise TargetRefused(f"--target {name}: no canary pod runs on {name} (they run on {running})")
    _check_blast(e, node, topo)
    return name


def static(spec: ClusterSpec, e: Experiment, target: str) -> None:
    """What the cluster file alone rules out (before any connection is made). With ``auto``,
    the experiment must be possible on some node."""
    topo = from_spec(spec)
    if target == AUTO:
        if e.target is Target.POD:
            if not any(n.canary_may_run for n in topo.nodes.values()):
                raise NoCanaryNodeRefused("the canary has no node to run on")
            return
        if e.target is Target.ETCD_LEADER:  # the leader is not known yet: any member will do
            candidates = _role_list(topo, "etcd")
        elif e.target is Target.CONTROL_PLANE:
            candidates = _role_list(topo, "control-plane")
        else:
            candidates = [_auto(e, topo)]
        problems: list[Refused] = []
        for name in candidates:
            try:
                _check_blast(e, topo.nodes[name], topo)
                return
            except Refused as exc:
                problems.append(exc)
        raise problems[0]
    if target not in topo.nodes:
        raise TargetRefused(f"--target {target}: no such node in the cluster file ({', '.join(topo.nodes)})")
    node = topo.nodes[target]
    _check_target_kind(e, node, topo)
    if e.target is not Target.POD:
        _check_blast(e, node, topo)


def steady_state(topo: Topology, problems: list[str]) -> None:
    """Refuse unless every node is Ready, every etcd member healthy and ``problems`` (canary,
    data, validation) is empty."""
    not_ready = [n.name for n in topo.nodes.values() if not n.ready]
    if not_ready:
        problems = [f"{', '.join(not_ready)} not Ready", *problems]
    sick = [m for m, ok in topo.etcd_healthy.items() if not ok]
    if sick:
        problems = [*problems, f"etcd member {', '.join(sick)} unhealthy"]
    if problems:
        raise SteadyStateRefused(f"the steady state does not hold: {'; '.join(problems)}")
