"""Decisions from facts: what a command may do to the cluster as it really is.

Pure functions (unit-tested): each takes the cluster file and the facts gathered from the
nodes (facts.py), and returns the problems, one line each. A command refuses, before any
change, when there is one.
"""

from __future__ import annotations

from pathlib import Path

from provisioner.errors import InputError
from provisioner.facts import ClusterFacts, ca_fingerprint
from provisioner.spec import ClusterSpec, pod_mtu


class GuardError(InputError):
    """The cluster as it is does not allow what the command was asked to do."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join([*problems, "nothing was changed"]))


def version_key(version: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in (version or "v0.0.0").lstrip("v").split("."))


def controller_cas(pki_dir: Path) -> dict[str, str | None]:
    """Fingerprints of the CAs the state directory holds (None: it has none)."""
    out: dict[str, str | None] = {}
    for key, rel in (("ca", "ca.crt"), ("etcd_ca", "etcd/ca.crt")):
        path = pki_dir / rel
        out[key] = ca_fingerprint(path.read_bytes()) if path.is_file() else None
    return out


def pki(facts: ClusterFacts, ours: dict[str, str | None], pki_dir: Path) -> list[str]:
    """The nodes must trust the CAs this state directory holds. A running cluster whose
    CA the controller lacks or does not match is never given new certificates."""
    problems = []
    names = {"ca": "the cluster CA", "etcd_ca": "the etcd CA"}
    for name, node in facts.nodes.items():
        for key in ("ca", "etcd_ca"):
            theirs = getattr(node, key)
            if theirs is None or theirs == ours.get(key):
                continue
            if ours.get(key) is None:
                problems.append(
                    f"{name}: the node trusts {names[key]} {theirs[:23]}… but {pki_dir} has none: this state "
                    "directory did not create the cluster. Bring its PKI back (copy the cluster directory from "
                    "the workstation that created it, or restore pki/ from a backup) and run again"
                )
            else:
                problems.append(
                    f"{name}: the node trusts {names[key]} {theirs[:23]}… and {pki_dir} holds "
                    f"{str(ours[key])[:23]}…: this is another cluster's PKI. Use the state directory "
                    "of this cluster (--state-dir), or restore its pki/ from a backup"
                )
            break  # one line a node
    return problems


def version(spec: ClusterSpec, facts: ClusterFacts) -> list[str]:
    """create and scale converge to the file's version; they never upgrade or downgrade."""
    running = facts.kube_versions()
    wanted = spec.kubernetes.version
    if not running or set(running) == {wanted}:
        return []
    if len(running) > 1:
        where = "; ".join(f"{v} on {', '.join(sorted(n))}" for v, n in sorted(running.items()))
        newest = max(running, key=version_key)
        return [
            f"kubernetes.version: the nodes run different versions ({where}): an upgrade was interrupted; "
            f"finish it with `provisioner cluster upgrade --to {newest}`"
        ]
    (have,) = running
    if version_key(wanted) > version_key(have):
        fix = f"upgrade with `provisioner cluster upgrade --to {wanted}`"
    else:
        fix = f"set kubernetes.version: {have} in the file (downgrades are not supported)"
    return [f"kubernetes.version: the cluster runs {have} and the file says {wanted}; {fix}"]


def running_version(facts: ClusterFacts) -> str | None:
    """The oldest version any node runs (an interrupted upgrade continues from there)."""
    running = facts.kube_versions()
    return min(running, key=version_key) if running else None


def membership(spec: ClusterSpec, facts: ClusterFacts) -> list[str]:
    """create on a running cluster must not bootstrap new etcd members as a new cluster,
    and must not leave out a member or a Node the cluster has."""
    problems = []
    names = {n.name for n in spec.nodes}
    if facts.etcd_members:
        members = set(facts.etcd_members)
        new = [n.name for n in spec.etcd_members if n.name not in members]
        if new:
            problems.append(
                f"nodes[{', '.join(new)}]: new etcd members join a running cluster with "
                "`provisioner cluster scale`, not create"
            )
        gone = sorted(m for m in members if m not in {n.name for n in spec.etcd_members})
        if gone:
            problems.append(
                f"etcd member {', '.join(gone)} is not an etcd node in the file: add it back, or take it out "
                f"with `provisioner cluster remove-node {' '.join(gone)}`"
            )
    if facts.k8s_nodes:
        gone = sorted(set(facts.k8s_nodes) - names)
        if gone:
            problems.append(
                f"Node {', '.join(gone)} is in the cluster but not in the file: add it back, or take it out "
                f"with `provisioner cluster remove-node {' '.join(gone)}`"
            )
    return problems


def reachable(facts: ClusterFacts, leave_out: list[str] | None = None) -> list[str]:
    """Every node must have answered: a silent node could look like a new one."""
    silent = [n for n in facts.unreachable if n not in (leave_out or [])]
    return [f"{', '.join(silent)}: did not answer fact gathering; bring it back or check SSH"] if silent else []


def new_nodes(spec: ClusterSpec, facts: ClusterFacts) -> tuple[list[str], list[str]]:
    """scale: (the nodes to add, the problems). A node is new when nothing of the cluster
    is installed on it; scale only adds nodes."""
    problems = reachable(facts) + membership_for_scale(spec, facts)
    if not facts.installed:
        problems.append("no node of the file runs the cluster yet; run `provisioner cluster create` first")
    added = [n.name for n in spec.nodes if n.name in facts.nodes and not facts.nodes[n.name].installed]
    return added, problems


def membership_for_scale(spec: ClusterSpec, facts: ClusterFacts) -> list[str]:
    problems = []
    if facts.k8s_nodes:
        gone = sorted(set(facts.k8s_nodes) - {n.name for n in spec.nodes})
        if gone:
            problems.append(
                f"Node {', '.join(gone)} is no longer in the file; use `provisioner cluster remove-node` for it"
            )
        for n in spec.nodes:
            k = facts.k8s_nodes.get(n.name)
            if k is None:
                continue
            if k.address and k.address != n.address:
                problems.append(f"node {n.name}: the cluster knows it at {k.address}, the file says {n.address}")
            if k.control_plane != ("control-plane" in n.roles):
                problems.append(f"node {n.name}: its roles changed; scale only adds nodes")
    if facts.etcd_members:
        gone = sorted(set(facts.etcd_members) - {n.name for n in spec.etcd_members})
        if gone:
            problems.append(
                f"etcd member {', '.join(gone)} is not an etcd node in the file; "
                "use `provisioner cluster remove-node` for it"
            )
    return problems


def removable(spec: ClusterSpec, facts: ClusterFacts, names: list[str]) -> list[str]:
    """remove-node: the nodes are in the file and part of the cluster, and something stays."""
    problems = []
    for name in names:
        if name not in {n.name for n in spec.nodes}:
            problems.append(f"{name} is not in the cluster file; nothing to remove")
        elif name in facts.nodes and facts.nodes[name].reachable and not facts.nodes[name].installed:
            problems.append(f"{name} is not part of the cluster yet")
    if problems:
        return problems
    staying = [n for n in spec.nodes if n.name not in names]
    for role, what in (("control-plane", "control plane"), ("etcd", "etcd member")):
        if any(role in n.roles for n in spec.nodes if n.name in names) and not any(role in n.roles for n in staying):
            problems.append(
                f"removing {', '.join(names)} would leave no {what}; use `cluster reset` to take the whole cluster down"
            )
    return problems


def encapsulation(spec: ClusterSpec, facts: ClusterFacts) -> list[str]:
    """The encapsulation and the pod MTU of a running pod network are not changed by create:
    a pod keeps the MTU it started with, so pods started before the change would send packets
    the tunnel cannot carry (or waste it). Refused, naming a node, before any change. The mode
    (always / cross-subnet), the VXLAN port and VNI may change: create converges them in place."""
    net = spec.network
    want_mtu = pod_mtu(net)
    for name, node in facts.nodes.items():
        if node.encapsulation is None:
            continue  # not networked yet (a new node)
        if node.encapsulation != net.encapsulation:
            return [
                f"network.encapsulation: {name} runs the pod network with encapsulation {node.encapsulation} and "
                f"the file says {net.encapsulation}; a running cluster's encapsulation is not changed (its pods "
                f"keep the MTU they started with): set it back to {node.encapsulation}, or reset the cluster and "
                "create it again"
            ]
        if node.pod_mtu is not None and node.pod_mtu != want_mtu:
            return [
                f"network.mtu: {name} gives pods an MTU of {node.pod_mtu} and the file would give {want_mtu}; a "
                "running cluster's pod MTU is not changed (its pods keep the MTU they started with): set "
                f"network.mtu back to {node.pod_mtu + (net.mtu - want_mtu)}, or reset the cluster and create it again"
            ]
    return []
