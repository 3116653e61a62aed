"""What `cluster create` would do for a spec: nodes by role, versions, networks, pod
blocks and the plays, as data (the CLI prints it as a table or JSON)."""

from __future__ import annotations

from typing import Any

import yaml

from provisioner.inventory import assign_pod_blocks
from provisioner.paths import PLAYBOOKS
from provisioner.spec import ClusterSpec
from provisioner.versions import release


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
        },
        "network": {
            "plugin": spec.network.plugin,
            "pod_subnet": spec.network.pod_subnet,
            "service_subnet": spec.network.service_subnet,
            "node_prefix": spec.network.node_prefix,
            "encapsulation": spec.network.encapsulation,
            "nat_outgoing": spec.network.nat_outgoing,
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
        "plays": plays(playbook),
        "files_repo": spec.artifacts.files_repo,
    }
