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
from provisioner.spec import TUNNEL_OVERHEAD, ClusterSpec, pod_mtu
from provisioner.versions import LOCAL_PATH_PROVISIONER, METRICS_SERVER, release

BIN_DIR = "/usr/local/bin"
KUBE_CONFIG_DIR = "/etc/kubernetes"
KUBE_PKI = f"{KUBE_CONFIG_DIR}/pki"
ETCD_PKI = f"{KUBE_PKI}/etcd"
ETCD_DATA_DIR = "/var/lib/etcd"
ADMIN_KUBECONFIG = f"{KUBE_CONFIG_DIR}/admin.kubeconfig"
CNI_CONFIG = "/etc/cni/net.d/10-provisioner.conflist"
DOWNLOAD_DIR = "/opt/provisioner"
AUDIT_LOG = "/var/log/kubernetes/audit/audit.log"
AUDIT_POLICY = f"{KUBE_CONFIG_DIR}/audit-policy.yaml"
ADMISSION_CONFIG = f"{KUBE_CONFIG_DIR}/admission-config.yaml"
# The kernel tunables the kubelet needs (its own list); with protectKernelDefaults it only
# checks them, so the node role writes them to /etc/sysctl.d first.
KUBELET_SYSCTLS = {
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "kernel.keys.root_maxkeys": "1000000",
    "kernel.keys.root_maxbytes": "25000000",
}

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
        "kube_audit_log_path": AUDIT_LOG,
        "kube_audit_policy_file": AUDIT_POLICY,
        "kube_admission_config_file": ADMISSION_CONFIG,
        "kubelet_kernel_sysctls": dict(KUBELET_SYSCTLS),
        **PORTS,
        # etcdctl as the health-check client, against this host's member (or the one delegated to)
        "etcd_ctl_argv": [
            f"{BIN_DIR}/etcdctl",
            f"--endpoints=https://127.0.0.1:{PORTS['etcd_client_port']}",
            *etcd_client,
        ],
        "kubectl_argv": [f"{BIN_DIR}/kubectl", f"--kubeconfig={ADMIN_KUBECONFIG}"],
        "kube_apiserver_local_url": f"https://127.0.0.1:{API_PORT}",
        "chaos_timer_margin": CHAOS_TIMER_MARGIN_S,
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
        "kube_node_monitor_grace_period": spec.kubernetes.node_monitor_grace_period,
        "kubelet_eviction_hard": dict(spec.kubernetes.eviction_hard),
        "pod_subnet": net.pod_subnet,
        "service_subnet": net.service_subnet,
        "node_prefix": net.node_prefix,
        "kube_service_ip": service_ip(spec),
        "cluster_dns_ip": dns_ip(spec),
        **encapsulation_vars(spec),
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
        **hardening_vars(spec),
        **addons_vars(spec),
        **api_vip_vars(spec),
        **network_policy_vars(spec),
        **fixed(),
    }


# The tunnel devices (Calico's are vxlan.calico and tunl0): named so that reset finds them
TUNNEL_DEVICES = {"vxlan": "pod-vxlan", "ipip": "pod-ipip"}
TUNNEL_UNIT = "/etc/systemd/system/pod-tunnel.service"
TUNNEL_SCRIPT = "/etc/provisioner/pod-tunnel.sh"
# The routes to remote pod blocks through the tunnel: a metric above BIRD's (32), so that with
# cross-subnet a direct route BIRD learned (a peer on the same L2 subnet) wins over the tunnel.
TUNNEL_ROUTE_METRIC = 1024
BIRD_KERNEL_METRIC = 32


def tunnel_mac(address: str) -> str:
    """The MAC of a node's VXLAN device: locally administered (02:), then the node's IPv4
    address, so every node knows every peer's without asking (its FDB and ARP entries)."""
    return "02:70:" + ":".join(f"{int(b):02x}" for b in address.split("."))


def encapsulation_vars(spec: ClusterSpec) -> dict[str, Any]:
    """``network.encapsulation`` and its settings as the network role reads them."""
    net = spec.network
    return {
        "network_encapsulation": net.encapsulation,
        "network_encapsulation_mode": net.encapsulation_mode,
        "network_mtu": net.mtu,
        "network_pod_mtu": pod_mtu(net),
        "network_tunnel_overhead": TUNNEL_OVERHEAD[net.encapsulation],
        "network_tunnel_device": TUNNEL_DEVICES.get(net.encapsulation, ""),
        "network_tunnel_devices": sorted(TUNNEL_DEVICES.values()),
        "network_tunnel_unit": TUNNEL_UNIT,
        "network_tunnel_script": TUNNEL_SCRIPT,
        "network_tunnel_route_metric": TUNNEL_ROUTE_METRIC,
        "network_bird_kernel_metric": BIRD_KERNEL_METRIC,
        "vxlan_port": net.vxlan_port,
        "vxlan_vni": net.vxlan_vni,
    }


METRICS_SERVER_IMAGE = "registry.k8s.io/metrics-server/metrics-server"
LOCAL_PATH_IMAGE = "docker.io/rancher/local-path-provisioner"
KEEPALIVED_CONFIG = "/etc/keepalived/keepalived.conf"


def addons_vars(spec: ClusterSpec) -> dict[str, Any]:
    """The cluster file's ``addons`` section as the addons role reads it (images come from
    the mirror, tagged with the versions its Go modules pin, see versions.py)."""
    a = spec.addons
    return {
        "addon_metrics_server": a.metrics_server.enabled,
        "addon_local_path": a.local_path.enabled,
        "local_path_default_class": a.local_path.default_class,
        "local_path_dir": a.local_path.path.rstrip("/"),
        "metrics_server_image": f"{METRICS_SERVER_IMAGE}:{METRICS_SERVER}",
        "local_path_image": f"{LOCAL_PATH_IMAGE}:{LOCAL_PATH_PROVISIONER}",
    }


def api_vip_vars(spec: ClusterSpec) -> dict[str, Any]:
    """The API virtual IP: where clients (the admin kubeconfig) reach the API. With no VIP,
    ``api_endpoint_host`` is the first control plane's address, as before."""
    vip = spec.api_vip
    first_cp = spec.control_planes[0].address if spec.control_planes else ""
    return {
        "api_vip_enabled": vip is not None,
        "api_vip_address": vip.address if vip else "",
        "api_vip_interface": (vip.interface or "") if vip else "",
        "api_vip_router_id": vip.virtual_router_id if vip else 0,
        "api_endpoint_host": vip.address if vip else first_cp,
        "keepalived_config": KEEPALIVED_CONFIG,
    }


def hardening_vars(spec: ClusterSpec) -> dict[str, Any]:
    """The cluster file's ``hardening`` section as the roles read it."""
    h = spec.hardening
    tls13 = h.tls.min_version == "VersionTLS13"
    return {
        "kube_audit_log_enabled": h.audit_log.enabled,
        "kube_audit_log_maxage": h.audit_log.max_age_days,
        "kube_audit_log_maxbackup": h.audit_log.max_backups,
        "kube_audit_log_maxsize": h.audit_log.max_size_mb,
        "kube_components_local_bind": h.local_bind,
        # Kubernetes' names (VersionTLS12) and etcd's (TLS1.2); TLS 1.3 suites are not configurable
        "tls_min_version": h.tls.min_version,
        "etcd_tls_min_version": "TLS1.3" if tls13 else "TLS1.2",
        "tls_cipher_suites": [] if tls13 else list(h.tls.cipher_suites),
        "pod_security_enabled": h.pod_security.enabled,
        "pod_security_enforce": h.pod_security.enforce,
        "pod_security_warn": h.pod_security.warn,
        "pod_security_audit": h.pod_security.audit,
        "pod_security_exempt_namespaces": list(h.pod_security.exempt_namespaces),
        "event_rate_limit_enabled": h.event_rate_limit.enabled,
        "event_rate_limit_server_qps": h.event_rate_limit.server_qps,
        "event_rate_limit_server_burst": h.event_rate_limit.server_burst,
        "event_rate_limit_namespace_qps": h.event_rate_limit.namespace_qps,
        "event_rate_limit_namespace_burst": h.event_rate_limit.namespace_burst,
        "kubelet_seccomp_default": h.seccomp_default,
        "kubelet_protect_kernel_defaults": h.protect_kernel_defaults,
    }


KUBE_ROUTER_KUBECONFIG = f"{KUBE_CONFIG_DIR}/kube-router.kubeconfig"
KUBE_ROUTER_USER = "system:kube-router"


def network_policy_vars(spec: ClusterSpec) -> dict[str, Any]:
    """NetworkPolicy enforcement (``network.policy``): kube-router's policy controller on every
    node, with its own kubeconfig (user ``system:kube-router``, read-only RBAC)."""
    return {
        "network_policy": spec.network.policy,
        "kube_router_kubeconfig": KUBE_ROUTER_KUBECONFIG,
        "kube_router_user": KUBE_ROUTER_USER,
    }


# -- cluster chaos ------------------------------------------------------------------------------
# Kubernetes' own timings that the recovery figures of `cluster chaos` follow.
KUBELET_LEASE_RENEW_S = 10  # the kubelet renews its Lease every 10 s (25% of its 40 s duration)
NODE_MONITOR_PERIOD_S = 5  # kube-controller-manager --node-monitor-period: how often it looks
DEFAULT_TOLERATION_S = 300  # DefaultTolerationSeconds: pods stay on a NotReady node this long
# kube-controller-manager --leader-elect-lease-duration and --leader-elect-retry-period: when the
# control plane that dies held the controller manager's lease, another takes it over first
KCM_LEASE_S = 15
KCM_RETRY_S = 2
# The node's own undo timer fires this long after --duration, so that the controller's undo (an
# Ansible play: several seconds to connect on a busy controller) normally comes first.
CHAOS_TIMER_MARGIN_S = 30


def chaos_limits(spec: ClusterSpec, experiment: str) -> dict[str, float | None]:
    """The hypothesis of one experiment: its default limits, then the cluster file's
    ``chaos.limits`` over them (null there turns a limit off).

    The defaults are what a cluster built by provisioner keeps: a Node is marked NotReady
    within node_monitor_grace_period (+ the node monitor period and a margin; + the controller
    manager's lease when the fault may take the control plane that holds it); the etcd
    members elect a new leader within a few election timeouts; the canary is whole again
    within a minute of the fault's end; and the API, reached through the admin kubeconfig's
    endpoint (the VIP when there is one), stays up while a quorum of control planes does.
    """
    not_ready = float(spec.kubernetes.node_monitor_grace_period + NODE_MONITOR_PERIOD_S + 10)
    # a control plane may hold the controller manager's lease: its successor starts every node's
    # grace period afresh
    not_ready_cp = not_ready + KCM_LEASE_S + KCM_RETRY_S
    election = round(3 * spec.etcd.election_timeout_ms / 1000 + 2, 1)
    base: dict[str, float | None] = {"recovery_s": 60.0, "api_availability_pct": 99.0}
    per: dict[str, dict[str, float | None]] = {
        "kill-pod": {"canary_availability_pct": 95.0, "canary_longest_gap_s": 2.0},
        "kill-node": {"detection_s": not_ready, "canary_availability_pct": 60.0},
        "kill-control-plane": {
            "detection_s": not_ready_cp,
            "canary_availability_pct": 60.0,
            "leader_election_s": election,
        },
        "kill-etcd-leader": {
            "detection_s": election,
            "leader_election_s": election,
            "api_availability_pct": 90.0,  # the API waits for the new leader: a gap, not an outage
            "api_longest_gap_s": election + 2,
            "canary_availability_pct": 95.0,
        },
        "partition-node": {"detection_s": not_ready_cp, "canary_availability_pct": 60.0, "leader_election_s": election},
        "stop-kubelet": {"detection_s": not_ready, "canary_availability_pct": 90.0},
    }
    limits = {**base, **per[experiment]}
    limits.update(spec.chaos.limits.get(experiment, {}))
    return limits
