"""Every fixed default and every derived value of a cluster, in one place.

The cluster file's own settings (with their defaults) are the pydantic model in spec.py.
Everything else that more than one role, playbook or Python module needs (ports, paths,
the service and DNS addresses, the etcdctl and kubectl command lines) is here, and
``group_vars`` puts all of it into the generated inventory's ``group_vars/all.yml``. The
roles keep in their own ``defaults/`` only what is private to them, as kubespray's roles
do beside ``kubespray_defaults``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from provisioner import ssh
from provisioner.spec import ClusterSpec
from provisioner.versions import release

BIN_DIR = "/usr/local/bin"
KUBE_CONFIG_DIR = "/etc/kubernetes"
KUBE_PKI = f"{KUBE_CONFIG_DIR}/pki"
ETCD_PKI = f"{KUBE_PKI}/etcd"
ETCD_DATA_DIR = "/var/lib/etcd"
ADMIN_KUBECONFIG = f"{KUBE_CONFIG_DIR}/admin.kubeconfig"
CNI_CONFIG = "/etc/cni/net.d/10-provisioner.conflist"
DOWNLOAD_DIR = "/opt/provisioner"

PORTS = {
    "kube_apiserver_port": 6443,
    "kube_controller_manager_port": 10257,
    "kube_scheduler_port": 10259,
    "kubelet_port": 10250,
    "kube_proxy_healthz_port": 10256,
    "etcd_client_port": 2379,
    "etcd_peer_port": 2380,
    "etcd_metrics_port": 2381,
    "bgp_port": 179,
}
API_PORT = PORTS["kube_apiserver_port"]


def _nth(cidr: str, n: int) -> str:
    return str(ipaddress.ip_network(cidr)[n])


def service_ip(spec: ClusterSpec) -> str:
    """The `kubernetes` Service's ClusterIP: the service subnet's first address."""
    return _nth(spec.network.service_subnet, 1)


def dns_ip(spec: ClusterSpec) -> str:
    return _nth(spec.network.service_subnet, 10)


def fixed() -> dict[str, Any]:
    """Paths, ports and command lines that do not depend on the cluster file."""
    etcd_client = [
        f"--cacert={ETCD_PKI}/ca.crt",
        f"--cert={ETCD_PKI}/healthcheck-client.crt",
        f"--key={ETCD_PKI}/healthcheck-client.key",
    ]
    return {
        "bin_dir": BIN_DIR,
        "kube_config_dir": KUBE_CONFIG_DIR,
        "kube_pki": KUBE_PKI,
        "etcd_pki": ETCD_PKI,
        "etcd_data_dir": ETCD_DATA_DIR,
        "cni_config": CNI_CONFIG,
        "download_dir": DOWNLOAD_DIR,
        "admin_kubeconfig": ADMIN_KUBECONFIG,
        **PORTS,
        # etcdctl as the health-check client, against this host's member (or the one delegated to)
        "etcd_ctl_argv": [
            f"{BIN_DIR}/etcdctl",
            f"--endpoints=https://127.0.0.1:{PORTS['etcd_client_port']}",
            *etcd_client,
        ],
        "kubectl_argv": [f"{BIN_DIR}/kubectl", f"--kubeconfig={ADMIN_KUBECONFIG}"],
        "kube_apiserver_local_url": f"https://127.0.0.1:{API_PORT}",
        **day2_params(),
    }


def day2_params() -> dict[str, str]:
    """What scale.yml and remove-node.yml derive from their one parameter (``-e
    scale_new_nodes=w4,w5`` / ``-e removed_nodes=w3``, comma-separated node names)."""

    def names(param: str) -> str:
        return f"{{{{ ({param} | default('')).split(',') | map('trim') | select | list }}}}"

    return {
        "scaling": names("scale_new_nodes"),
        "scaling_etcd": "{{ scaling | intersect(groups['etcd']) }}",
        "scaling_control_planes": "{{ scaling | intersect(groups['kube_control_plane']) }}",
        "removing": names("removed_nodes"),
        "removing_etcd": "{{ removing | intersect(groups['etcd']) }}",
        "removing_control_planes": "{{ removing | intersect(groups['kube_control_plane']) }}",
    }


def group_vars(spec: ClusterSpec, cluster_dir: Path) -> dict[str, Any]:
    """``group_vars/all``: the cluster file's settings, the fixed defaults and the derived
    values, plus how to reach the nodes (ssh.py)."""
    rel = release(spec.kubernetes.version)
    net = spec.network
    return {
        "cluster_name": spec.name,
        "provisioner_cluster_dir": str(cluster_dir),
        **ssh.ansible_vars(spec, cluster_dir),
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
        "kube_service_ip": service_ip(spec),
        "cluster_dns_ip": dns_ip(spec),
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
        **fixed(),
    }
