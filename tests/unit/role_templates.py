"""A role's template rendered as Ansible renders it on one host, for the unit tests: Ansible's
own Templar, the group_vars that provisioner.defaults builds, the role's defaults under them,
and the per-host variables the inventory gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from provisioner import defaults, spec

ROLES = Path(__file__).resolve().parents[2] / "provisioner" / "playbooks" / "roles"


def trusted(value: Any) -> Any:
    """Values as Ansible trusts its own variable files (templates inside them are rendered)."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


def host_vars(c: spec.ClusterSpec, host: str | None = None, state_dir: Path | None = None) -> dict[str, Any]:
    """group_vars/all plus what the inventory says of ``host`` (the first control plane when
    None): its name, address and groups, every node's address, and no node being removed."""
    node = c.node(host) if host else c.control_planes[0]
    group_names = [g for g, members in _groups(c).items() if node.name in members]
    return {
        **defaults.group_vars(c, state_dir or Path("/state") / c.name),
        "removing": [],
        "inventory_hostname": node.name,
        "ip": node.address,
        "groups": _groups(c),
        "group_names": group_names,
        "hostvars": {n.name: {"ip": n.address} for n in c.nodes},
    }


def _groups(c: spec.ClusterSpec) -> dict[str, list[str]]:
    return {
        "etcd": [n.name for n in c.etcd_members],
        "kube_control_plane": [n.name for n in c.control_planes],
        "k8s_cluster": [n.name for n in c.nodes],
    }


def templar(role: str, variables: dict[str, Any]) -> Templar:
    """A Templar with ``role``'s defaults under ``variables``."""
    loader = DataLoader()
    role_defaults = trusted(loader.load_from_file(str(ROLES / role / "defaults" / "main.yml")))
    return Templar(loader=loader, variables={**role_defaults, **variables})


def render(role: str, template: str, variables: dict[str, Any]) -> str:
    """``role``'s ``templates/<template>`` rendered with ``variables``."""
    text = (ROLES / role / "templates" / template).read_text()
    return str(templar(role, variables).template(trust_as_template(text)))
