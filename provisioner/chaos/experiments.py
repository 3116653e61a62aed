"""The experiment catalogue: what each one targets, what it stops on the node, and which
signal shows that the cluster noticed.

Node-side faults are carried out by the ``chaos`` role from these fields (passed as the
``chaos_fault`` variable), so the catalogue is the one description of a fault: the play
that injects it, the node's own undo timer and the controller's undo all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from provisioner.spec import CHAOS_EXPERIMENTS


class Target(StrEnum):
    POD = "pod"  # a canary pod (on the node --target names, or any)
    WORKER = "worker"  # a node that is not a control plane nor an etcd member
    CONTROL_PLANE = "control-plane"
    ETCD_LEADER = "etcd-leader"  # the member etcd reports as leader, whichever node it is
    NODE = "node"  # any node


class Signal(StrEnum):
    """What detection means for an experiment."""

    POD_GONE = "pod-gone"  # the Deployment counts one Ready replica less
    NODE_NOT_READY = "node-not-ready"  # the node controller marks the Node NotReady
    LEADER_CHANGE = "leader-change"  # the etcd members elect another leader


# Units stopped per kind of node: the services create installed (reset's list), less those that
# keep the node reachable for the undo (sshd is not ours) or are not long-running (pod-nat).
WORKER_UNITS = ("kubelet", "kube-proxy", "containerd")
CONTROL_PLANE_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


@dataclass(frozen=True)
class Experiment:
    name: str
    summary: str
    target: Target
    signal: Signal
    units: tuple[str, ...] = ()  # systemd units stopped on the target
    kill: bool = False  # SIGKILL first (a crash), not an orderly stop
    kill_containers: bool = False  # the containerd shims too: the containers die with containerd
    partition: bool = False  # firewall rules drop traffic to and from the other nodes
    etcd: bool = False  # the etcd member on the target is stopped too (when there is one)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def node_side(self) -> bool:
        return self.target is not Target.POD

    def units_for(self, roles: list[str]) -> list[str]:
        """The units stopped on a node with these roles, in the order they are stopped."""
        units = list(self.units)
        if self.target is Target.CONTROL_PLANE and "control-plane" in roles:
            units = [*CONTROL_PLANE_UNITS, *units]
        if self.etcd and "etcd" in roles:
            units.append("etcd")
        return units

    def fault(self, roles: list[str], duration: int, run_id: str) -> dict[str, Any]:
        """The ``chaos_fault`` variable of the chaos role for a node with these roles."""
        return {
            "experiment": self.name,
            "run": run_id,
            "units": self.units_for(roles),
            "kill": self.kill,
            "kill_containers": self.kill_containers,
            "partition": self.partition,
            "duration": duration,
        }

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["node_side"] = self.node_side
        return data


CATALOGUE: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "kill-pod",
            "delete one canary pod with grace period 0",
            Target.POD,
            Signal.POD_GONE,
        ),
        Experiment(
            "kill-node",
            "crash a worker: SIGKILL kubelet, kube-proxy, containerd and every container",
            Target.WORKER,
            Signal.NODE_NOT_READY,
            units=WORKER_UNITS,
            kill=True,
            kill_containers=True,
            notes=("the node stays reachable over SSH (a power-off would make the undo impossible)",),
        ),
        Experiment(
            "kill-control-plane",
            "crash a control plane: its API server, controller manager, scheduler, etcd member, "
            "kubelet, kube-proxy, containerd and containers",
            Target.CONTROL_PLANE,
            Signal.NODE_NOT_READY,
            units=WORKER_UNITS,
            kill=True,
            kill_containers=True,
            etcd=True,
        ),
        Experiment(
            "kill-etcd-leader",
            "SIGKILL the etcd member that is leader, and only it",
            Target.ETCD_LEADER,
            Signal.LEADER_CHANGE,
            kill=True,
            etcd=True,
        ),
        Experiment(
            "partition-node",
            "drop every packet between the node and the other nodes (their addresses and pod blocks); "
            "the controller's SSH stays open",
            Target.NODE,
            Signal.NODE_NOT_READY,
            partition=True,
        ),
        Experiment(
            "stop-kubelet",
            "stop the kubelet (its containers keep running)",
            Target.NODE,
            Signal.NODE_NOT_READY,
            units=("kubelet",),
        ),
    )
}
assert tuple(CATALOGUE) == CHAOS_EXPERIMENTS  # the cluster file's names (spec.py) are these


def get(name: str) -> Experiment:
    return CATALOGUE[name]
