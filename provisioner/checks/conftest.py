"""Fixtures for the node checks, all taken from the cluster's generated Ansible inventory.

`provisioner cluster validate` runs the checks with testinfra's Ansible backend
(``--hosts=ansible://all --ansible-inventory=<cluster dir>/inventory``), so every ``host``
is an inventory host and ``host.ansible.get_variables()`` gives its variables: the host
vars (``ip``), the cluster-wide group_vars (cluster_domain, cluster_dns_ip, kube_service_ip,
api_lb_port, bgp_route_reflectors, ...), ``inventory_hostname``, ``group_names`` (the
node's kubespray groups) and ``groups`` (every group's members). The groups the checks use:

    etcd                etcd members
    kube_control_plane  API server, controller-manager, scheduler
    kube_node           nodes that run workloads
    k8s_cluster         every Kubernetes node (kubelet, kube-proxy, containerd, BIRD, API LB)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    groups: frozenset[str]

    def require(self, group: str) -> None:
        """Skip the check on a node outside ``group``."""
        if group not in self.groups:
            pytest.skip(f"not in {group}")


@pytest.fixture
def hostvars(host: Any) -> dict[str, Any]:
    if getattr(host.backend, "NAME", "") != "ansible":
        pytest.skip(
            "run through `provisioner cluster validate` "
            "(needs --hosts=ansible://... and --ansible-inventory=<cluster dir>/inventory)"
        )
    return host.ansible.get_variables()


@pytest.fixture
def node(hostvars: dict[str, Any]) -> Node:
    name = str(hostvars["inventory_hostname"])
    return Node(
        name=name,
        address=str(hostvars.get("ip") or hostvars.get("ansible_host") or name),
        groups=frozenset(hostvars.get("group_names", [])),
    )


@pytest.fixture
def groups(hostvars: dict[str, Any]) -> dict[str, list[str]]:
    """Every group of the inventory -> its hosts (children's hosts included)."""
    return {g: list(members) for g, members in hostvars.get("groups", {}).items()}
