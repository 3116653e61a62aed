"""What `cluster create` would do for a spec: nodes by role, versions, networks, pod
blocks and the plays, as data (the CLI prints it as a table or JSON)."""

from __future__ import annotations

from typing import Any

import yaml

from provisioner.inventory import assign_pod_blocks
from provisioner.paths import PLAYBOOKS
from provisioner.spec import ClusterSpec, pod_mtu
from provisioner.versions import KUBE_ROUTER, LOCAL_PATH_PROVISIONER, METRICS_SERVER, release

# Above this many BGP speakers `cluster plan` suggests route reflectors: a full mesh is
# n*(n-1)/2 sessions in all and n-1 on every node (issue 14).
FULL_MESH_MAX = 50
SUGGESTED_REFLECTORS = 2


def plays(playbook: str = "cluster.yml") -> list[dict[str, str]]:
    """The plays of a playbook, in order: name and the hosts pattern."""
    path = PLAYBOOKS / playbook
    if not path.exists():
        return []
    out = []
    for play in yaml.safe_load(path.read_text()) or []:
        if "import_playbook" in play:
            out.extend(plays(play["import_playbook"]))
        else:
            out.append({"name": play.get("name", "?"), "hosts": str(play.get("hosts", "?"))})
    return out


def bgp_sessions(speakers: int, reflectors: int = 0) -> int:
    """BGP sessions as bird.conf makes them: a full mesh without reflectors; with them, each
    reflector peers with every other speaker and each client only with the reflectors."""
    if not reflectors:
        return speakers * (speakers - 1) // 2
    return reflectors * (speakers - 1) - reflectors * (reflectors - 1) // 2


def warnings(spec: ClusterSpec) -> list[str]:
    """What the cluster file allows but will hurt: one line each."""
    out = []
    # BIRD runs on the Kubernetes nodes (k8s_cluster), not on an etcd-only node
    speakers = [n.name for n in spec.nodes if "control-plane" in n.roles or "worker" in n.roles]
    n = len(speakers)
    if n > FULL_MESH_MAX and not spec.network.route_reflectors:
        cps = [x.name for x in spec.control_planes]
        rrs = (cps + [x for x in speakers if x not in cps])[:SUGGESTED_REFLECTORS]
        out.append(
            f"network: a BGP full mesh of {n} nodes is {bgp_sessions(n)} BGP sessions (n*(n-1)/2, {n - 1} "
            f"on every node); above {FULL_MESH_MAX} nodes set route reflectors, e.g. "
            f"`network.route_reflectors: [{', '.join(rrs)}]` ({bgp_sessions(n, len(rrs))} sessions)"
        )
    return out


def addons(spec: ClusterSpec) -> list[dict[str, Any]]:
    """The optional add-ons, on or off as the cluster file says, with what each gives."""
    lp = spec.addons.local_path
    default = " (default)" if lp.default_class else ""
    return [
        {
            "name": "metrics-server",
            "enabled": spec.addons.metrics_server.enabled,
            "version": METRICS_SERVER,
            "what": "metrics API: kubectl top, HorizontalPodAutoscalers",
            "field": "addons.metrics_server.enabled",
        },
        {
            "name": "local-path",
            "enabled": lp.enabled,
            "version": LOCAL_PATH_PROVISIONER,
            "what": f"StorageClass local-path{default}, volumes in {lp.path} on each node",
            "field": "addons.local_path.enabled",
        },
    ]


def make_plan(spec: ClusterSpec, previous_blocks: dict[str, str], playbook: str = "cluster.yml") -> dict[str, Any]:
    rel = release(spec.kubernetes.version)
    blocks = assign_pod_blocks(spec, previous_blocks)
    return {
        "cluster": spec.name,
        "versions": {
            "kubernetes": rel.kubernetes,
            "etcd": rel.etcd,
            "coredns": rel.coredns,
            "pause": rel.pause,
            **({"kube-router": KUBE_ROUTER} if spec.network.policy else {}),
        },
        "network": {
            "plugin": spec.network.plugin,
            "pod_subnet": spec.network.pod_subnet,
            "service_subnet": spec.network.service_subnet,
            "node_prefix": spec.network.node_prefix,
            "encapsulation": spec.network.encapsulation
            if spec.network.encapsulation == "none"
            else f"{spec.network.encapsulation} ({spec.network.encapsulation_mode})",
            "pod_mtu": pod_mtu(spec.network),
            "nat_outgoing": spec.network.nat_outgoing,
            "policy": "kube-router" if spec.network.policy else "off",
            "bgp": "route reflectors: " + ", ".join(spec.network.route_reflectors)
            if spec.network.route_reflectors
            else "full mesh",
        },
        "roles": {
            "etcd": [n.name for n in spec.etcd_members],
            "control-plane": [n.name for n in spec.control_planes],
            "worker": [n.name for n in spec.workers],
        },
        "nodes": [
            {
                "name": n.name,
                "address": n.address,
                "roles": list(n.roles),
                "pod_block": blocks[n.name],
                "new_block": n.name not in previous_blocks,
            }
            for n in spec.nodes
        ],
        "addons": addons(spec),
        "plays": plays(playbook),
        "files_repo": spec.artifacts.files_repo,
        "warnings": warnings(spec),
    }
