"""Cluster spec -> Ansible inventory (kubespray group names), as plain data.

``build`` is a pure function; ``write`` puts the result on disk as ``hosts.yaml`` and
``group_vars/all.yml`` with comments, so that a person can read what will be applied.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner import yamlio
from provisioner.errors import InputError
from provisioner.spec import ClusterSpec
from provisioner.versions import release

GROUPS = ("etcd", "kube_control_plane", "kube_node", "calico_rr")
ROLE_GROUP = {"etcd": "etcd", "control-plane": "kube_control_plane", "worker": "kube_node"}


class BlockError(InputError):
    """The pod subnet cannot hold every node."""


def assign_pod_blocks(spec: ClusterSpec, previous: dict[str, str]) -> dict[str, str]:
    """Give every node a pod block; keep earlier assignments, never renumber.

    A node keeps the block it had if that block still lies in the pod subnet with the
    node prefix. New nodes take the lowest free blocks, in file order.
    """
    pods = ipaddress.ip_network(spec.network.pod_subnet)
    blocks = list(pods.subnets(new_prefix=spec.network.node_prefix))
    names = [n.name for n in spec.nodes]
    kept: dict[str, str] = {}
    for name in names:
        old = previous.get(name)
        if old is None:
            continue
        net = ipaddress.ip_network(old)
        # (a hand-edited file could give two nodes one block: the first in file order keeps it)
        if net.subnet_of(pods) and net.prefixlen == spec.network.node_prefix and old not in kept.values():  # type: ignore[arg-type]
            kept[name] = old
    taken = set(kept.values())
    free = (str(b) for b in blocks if str(b) not in taken)
    result: dict[str, str] = {}
    for name in names:
        if name in kept:
            result[name] = kept[name]
            continue
        try:
            result[name] = next(free)
        except StopIteration:
            raise BlockError(
                f"network.pod_subnet: no free /{spec.network.node_prefix} block left for node "
                f"{name}; widen pod_subnet or raise node_prefix"
            ) from None
    return result


@dataclass(frozen=True)
class Inventory:
    hosts: dict[str, Any]
    group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The single-dict form that ansible-runner accepts (vars folded into groups)."""
        data = {"all": dict(self.hosts["all"])}
        data["all"]["vars"] = dict(self.group_vars.get("all", {}))
        return data


def _nth(cidr: str, n: int) -> str:
    return str(ipaddress.ip_network(cidr)[n])


def cluster_vars(spec: ClusterSpec, cluster_dir: Path) -> dict[str, Any]:
    rel = release(spec.kubernetes.version)
    net = spec.network
    return {
        "cluster_name": spec.name,
        "provisioner_cluster_dir": str(cluster_dir),
        "ansible_user": spec.ssh.user,
        "ansible_port": spec.ssh.port,
        "ansible_ssh_private_key_file": str(Path(spec.ssh.private_key).expanduser()),
        "ansible_python_interpreter": "/usr/bin/python3",
        "files_repo": spec.artifacts.files_repo.rstrip("/"),
        "kube_version": rel.kubernetes,
        "etcd_version": rel.etcd,
        "coredns_version": rel.coredns,
        "pause_version": rel.pause,
        "cluster_domain": spec.kubernetes.cluster_domain,
        "kube_proxy_mode": spec.kubernetes.proxy_mode,
        "kubelet_fail_cgroup_v1": spec.kubernetes.fail_cgroup_v1,
        "pod_subnet": net.pod_subnet,
        "service_subnet": net.service_subnet,
        "node_prefix": net.node_prefix,
        "kube_service_ip": _nth(net.service_subnet, 1),
        "cluster_dns_ip": _nth(net.service_subnet, 10),
        "network_encapsulation": net.encapsulation,
        "network_nat_outgoing": net.nat_outgoing,
        "bgp_asn": net.bgp_asn,
        "bgp_route_reflectors": list(net.route_reflectors),
        "etcd_quota_backend_bytes": spec.etcd.quota_backend_bytes,
        "etcd_memory_limit": spec.etcd.memory_limit,
        "etcd_heartbeat_interval": spec.etcd.heartbeat_interval_ms,
        "etcd_election_timeout": spec.etcd.election_timeout_ms,
        "etcd_snapshot_count": spec.etcd.snapshot_count,
        "api_lb_kind": spec.api_lb.kind,
        "api_lb_port": spec.api_lb.port,
        "containerd_restrict_oom_score_adj": spec.runtime.restrict_oom_score_adj,
    }


def build(spec: ClusterSpec, blocks: dict[str, str], cluster_dir: Path) -> Inventory:
    """Pure: the inventory for ``spec`` with the given pod block assignments."""
    hosts: dict[str, Any] = {}
    members: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    for node in spec.nodes:
        hv: dict[str, Any] = {"ansible_host": node.address, "ip": node.address}
        hv["pod_block"] = blocks[node.name]
        if node.ssh_user:
            hv["ansible_user"] = node.ssh_user
        if node.ssh_port:
            hv["ansible_port"] = node.ssh_port
        if node.labels:
            hv["node_labels"] = dict(node.labels)
        if node.taints:
            hv["node_taints"] = list(node.taints)
        hosts[node.name] = hv
        for role in node.roles:
            members[ROLE_GROUP[role]][node.name] = {}
        if node.name in spec.network.route_reflectors:
            members["calico_rr"][node.name] = {}
    children: dict[str, Any] = {g: {"hosts": members[g]} for g in GROUPS if members[g] or g != "calico_rr"}
    cluster_children = {"kube_control_plane": {}, "kube_node": {}}
    if members["calico_rr"]:
        cluster_children["calico_rr"] = {}
    children["k8s_cluster"] = {"children": cluster_children}
    return Inventory(
        hosts={"all": {"hosts": hosts, "children": children}},
        group_vars={"all": cluster_vars(spec, cluster_dir)},
    )


HOSTS_HEADER = """\
# Generated by `provisioner` from the cluster file. Edit the cluster file, not this:
# the next command regenerates it. Groups are kubespray's:
#   etcd               etcd members
#   kube_control_plane API server, controller-manager, scheduler
#   kube_node          nodes that run workloads
#   calico_rr          BGP route reflectors (only when network.route_reflectors is set)
#   k8s_cluster        every Kubernetes node (children: kube_control_plane, kube_node)
# Host vars: ip = node address, pod_block = the node's pod CIDR (stable, from
# pod-blocks.yaml), node_labels / node_taints from the cluster file.
"""

VARS_HEADER = """\
# Cluster-wide settings, generated from the cluster file (see the README's reference).
"""


def write(inv: Inventory, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yaml").write_text(HOSTS_HEADER + yamlio.dump(inv.hosts))
    gv = directory / "group_vars"
    gv.mkdir(exist_ok=True)
    for group, values in inv.group_vars.items():
        (gv / f"{group}.yml").write_text(VARS_HEADER + yamlio.dump(values))
    return directory
