"""The cluster file: load ``cluster.yaml`` into a validated model.

Validation reports every problem at once, one line each, naming the field path
(``nodes[2].address``) and saying what to do. Nothing here touches a node.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner import yamlio
from provisioner.errors import InputError
from provisioner.versions import DEFAULT_KUBERNETES, SUPPORTED_KUBERNETES

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes qualified name: optional DNS-1123 subdomain prefix + "/" + name.
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?)$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ROLES = ("etcd", "control-plane", "worker")


class SpecError(InputError):
    """The cluster file is not valid. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Kubernetes(_Model):
    version: str = DEFAULT_KUBERNETES
    proxy_mode: Literal["iptables", "ipvs", "nftables"] = "iptables"
    cluster_domain: str = "cluster.local"
    # Extra kubelet settings the lab needs; real hosts leave these alone.
    fail_cgroup_v1: bool | None = Field(
        default=None,
        description="None = decide from the cgroup version that preflight detects.",
    )
    # kube-controller-manager --node-monitor-grace-period: how long a node may go without renewing
    # its lease before it is marked NotReady (and its pods leave their Services' endpoints).
    # Kubernetes' default, 50 s, is most of the time it takes to notice a dead node.
    node_monitor_grace_period: int = 50
    # kubelet evictionHard: signal -> threshold ("10%", "500Mi"). Empty = the kubelet's defaults
    # (memory.available 100Mi, nodefs.available 10%, imagefs.available 15%, inodesFree 5%).
    # A map that is given replaces them all, so name every signal you want kept.
    eviction_hard: dict[str, str] = Field(default_factory=dict)


class Network(_Model):
    plugin: Literal["calico-style"] = "calico-style"
    pod_subnet: str = "10.233.64.0/18"
    service_subnet: str = "10.233.0.0/18"
    node_prefix: int = 24
    # Pod traffic between nodes: none = routed as is (every node on one L2 segment); vxlan or ipip =
    # through a tunnel device, for every remote node (always) or only for nodes on another L2
    # subnet (cross-subnet), as Calico does it. The pod MTU is mtu minus the tunnel's overhead.
    encapsulation: Literal["none", "vxlan", "ipip"] = "none"
    encapsulation_mode: Literal["always", "cross-subnet"] = "always"
    mtu: int = 1500  # the MTU of the nodes' own network (the underlay)
    vxlan_port: int = 4789  # UDP port of the VXLAN tunnel (IANA's)
    vxlan_vni: int = 4096  # VXLAN network identifier (Calico's default)
    nat_outgoing: bool = True
    route_reflectors: list[str] = Field(default_factory=list)
    bgp_asn: int = 64512
    # NetworkPolicy enforcement on every node: kube-router's network policy controller alone
    # (its router and service proxy off), a systemd service. false: nothing is installed, and
    # a cluster that has it loses it on the next create.
    policy: bool = True


class Etcd(_Model):
    quota_backend_bytes: int = 2 * 1024**3
    memory_limit: str = "1G"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 10000


class ApiLoadBalancer(_Model):
    kind: Literal["nginx", "haproxy"] = "nginx"
    port: int = 6444


class Artifacts(_Model):
    files_repo: str = "http://127.0.0.1:8088"
    # The image Kubernetes' own e2e tests run (agnhost, 83 MB), imported on every node: only
    # for a cluster that runs those tests (the mirror builds it beside e2e.test).
    test_images: bool = False


class Runtime(_Model):
    # The lab's host drops CAP_SYS_RESOURCE (see docs/lab.md); real hosts keep this false.
    restrict_oom_score_adj: bool = False


# TLS 1.2 cipher suites: ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305),
# as Go's crypto/tls names them (the names kube-apiserver, the kubelet and etcd all accept).
# TLS 1.3 suites are not configurable in Go; they are always the modern ones.
STRONG_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")


class AuditLog(_Model):
    """The API server's audit log (CIS 1.2.16-1.2.19, 3.2.1): a JSON file on each control
    plane, rotated by size and age; the policy is the role's (Metadata for most requests,
    never a Secret's or ConfigMap's body, no noisy read-only system traffic)."""

    enabled: bool = True
    max_age_days: int = 30  # --audit-log-maxage
    max_backups: int = 10  # --audit-log-maxbackup
    max_size_mb: int = 100  # --audit-log-maxsize


class Tls(_Model):
    """What the API server, the kubelets and etcd accept from their clients and peers."""

    min_version: Literal["VersionTLS12", "VersionTLS13"] = "VersionTLS12"
    cipher_suites: list[str] = Field(default_factory=lambda: list(STRONG_CIPHER_SUITES))


class PodSecurity(_Model):
    """Pod Security admission's cluster-wide defaults (a namespace's own labels still win)."""

    enabled: bool = True
    enforce: Literal["privileged", "baseline", "restricted"] = "baseline"
    warn: Literal["privileged", "baseline", "restricted"] = "restricted"
    audit: Literal["privileged", "baseline", "restricted"] = "restricted"
    exempt_namespaces: list[str] = Field(default_factory=lambda: ["kube-system"])


class EventRateLimit(_Model):
    """The EventRateLimit admission plugin: events per second the API server accepts, in all
    and per namespace (a burst on top); more are refused with 429."""

    enabled: bool = True
    server_qps: int = 50
    server_burst: int = 100
    namespace_qps: int = 50
    namespace_burst: int = 100


class Hardening(_Model):
    """CIS Kubernetes Benchmark settings; every part is on by default."""

    audit_log: AuditLog = Field(default_factory=AuditLog)
    # kube-controller-manager and kube-scheduler serve /healthz and /metrics on 127.0.0.1 only
    local_bind: bool = True
    tls: Tls = Field(default_factory=Tls)
    pod_security: PodSecurity = Field(default_factory=PodSecurity)
    event_rate_limit: EventRateLimit = Field(default_factory=EventRateLimit)
    # kubelet: RuntimeDefault seccomp profile for every container that asks for none
    seccomp_default: bool = True
    # kubelet: refuse to start unless the kernel tunables it needs are already set (the node
    # role sets them in /etc/sysctl.d first). The lab turns it off: its machine containers
    # share the host kernel (see provisioner/lab/manager.py).
    protect_kernel_defaults: bool = True


class MetricsServer(_Model):
    """metrics-server (sigs.k8s.io/metrics-server): the metrics API behind `kubectl top` and HPAs."""

    enabled: bool = True


class LocalPath(_Model):
    """local-path-provisioner (rancher): a default StorageClass backed by a directory on each node."""

    enabled: bool = True
    default_class: bool = True  # marked as the cluster's default StorageClass
    path: str = "/opt/local-path-provisioner"  # where the volumes live on each node


class Addons(_Model):
    """Cluster add-ons, each built from its own pinned Go module into the mirror. Both are on
    by default; turn one off with e.g. `addons: {metrics_server: {enabled: false}}`."""

    metrics_server: MetricsServer = Field(default_factory=MetricsServer)
    local_path: LocalPath = Field(default_factory=LocalPath)


class ApiVip(_Model):
    """A virtual IP for the API, held by keepalived (VRRP) on the control planes. It moves when
    the API server or the whole node holding it dies; the admin kubeconfig points at it."""

    address: str
    interface: str | None = None  # None = the interface carrying each control plane's address
    virtual_router_id: int = 51  # VRRP id: unique among the VRRP routers on this L2 segment


# `provisioner cluster chaos`: the experiments and the limits of their hypotheses. The
# default limits are in provisioner/defaults.py (chaos_limits); the cluster file overrides some.
CHAOS_EXPERIMENTS = (
    "kill-pod",
    "kill-node",
    "kill-control-plane",
    "kill-etcd-leader",
    "partition-node",
    "stop-kubelet",
)
CHAOS_LIMITS = {
    "detection_s": "max",  # the fault noticed (Node NotReady, etcd leader change) within
    "recovery_s": "max",  # the canary fully Ready again within this after the fault ends
    "api_availability_pct": "min",  # the API through the admin kubeconfig's endpoint
    "api_longest_gap_s": "max",
    "canary_availability_pct": "min",  # the canary Service, polled from inside the cluster
    "canary_longest_gap_s": "max",
    "leader_election_s": "max",  # etcd: from the members losing the leader to a new one
}


class Chaos(_Model):
    """`cluster chaos`: where its canary lives and what its hypotheses allow. ``limits`` overrides
    the defaults per experiment, e.g. ``{kill-pod: {recovery_s: 30}}``; null turns a limit off."""

    namespace: str = "provisioner-chaos"
    canary_replicas: int | None = None  # None = one per node the canary may run on
    settle_s: float = 10  # the steady state must hold this long to count as recovered
    limits: dict[str, dict[str, float | None]] = Field(default_factory=dict)


class Ssh(_Model):
    user: str = "root"
    private_key: str = "~/.ssh/id_ed25519"
    port: int = 22


class Node(_Model):
    name: str
    address: str
    roles: list[Literal["etcd", "control-plane", "worker"]]
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[str] = Field(default_factory=list)
    ssh_user: str | None = None
    ssh_port: int | None = None


class ClusterSpec(_Model):
    name: str
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    network: Network = Field(default_factory=Network)
    etcd: Etcd = Field(default_factory=Etcd)
    api_lb: ApiLoadBalancer = Field(default_factory=ApiLoadBalancer)
    artifacts: Artifacts = Field(default_factory=Artifacts)
    runtime: Runtime = Field(default_factory=Runtime)
    hardening: Hardening = Field(default_factory=Hardening)
    addons: Addons = Field(default_factory=Addons)
    api_vip: ApiVip | None = None
    chaos: Chaos = Field(default_factory=Chaos)
    ssh: Ssh = Field(default_factory=Ssh)
    nodes: list[Node]

    # -- views used by the inventory and the CLI ---------------------------------------
    def with_role(self, role: str) -> list[Node]:
        return [n for n in self.nodes if role in n.roles]

    @property
    def control_planes(self) -> list[Node]:
        return self.with_role("control-plane")

    @property
    def etcd_members(self) -> list[Node]:
        return self.with_role("etcd")

    @property
    def workers(self) -> list[Node]:
        return self.with_role("worker")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


# -- loading ------------------------------------------------------------------------------


def load(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster file; raise SpecError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read the cluster file: {exc.strerror}"]) from None
    return parse(text, source=str(path))


def parse(text: str, source: str = "cluster.yaml") -> ClusterSpec:
    try:
        data = yamlio.load(text)
    except yamlio.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise SpecError(source, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["the file must be a mapping with at least `name` and `nodes`"])
    return from_dict(data, source)


def from_dict(data: dict[str, Any], source: str = "cluster.yaml") -> ClusterSpec:
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        # Unknown keys alone still let the rules run (without those keys), so that a typo
        # does not hide the other problems: every problem is reported at once.
        rest = _without_unknown_keys(data, exc)
        raise SpecError(source, _explain(exc) + (check(rest) if rest else [])) from None
    problems = check(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def _without_unknown_keys(data: dict[str, Any], exc: ValidationError) -> ClusterSpec | None:
    """The spec with the unknown keys left out, when those were its only structural problems."""
    errors = exc.errors()
    if any(err["type"] != "extra_forbidden" for err in errors):
        return None
    data = copy.deepcopy(data)
    for err in errors:
        *parents, key = err["loc"]
        target: Any = data
        for part in parents:
            target = target[part]
        del target[key]
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError:
        return None


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ClusterSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if inner:
            ann = inner[0]
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def _explain(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            known = sorted(parent.model_fields) if parent else []
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            what = f"did you mean `{hint[0]}`?" if hint else f"known keys: {', '.join(known)}"
            lines.append(f"{_path(loc)}: unknown key; {what}")
        elif kind == "missing":
            lines.append(f"{_path(loc)}: required; add it")
        elif kind == "literal_error":
            lines.append(f"{_path(loc)}: {err['msg'].lower()}")
        else:
            lines.append(f"{_path(loc)}: {err['msg']} (got {err.get('input')!r})")
    return lines


# -- semantic rules -------------------------------------------------------------------------


def _net(field: str, value: str, problems: list[str]) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        problems.append(f"{field}: {value!r} is not a valid CIDR ({exc}); write it as 10.233.64.0/18")
        return None
    if not isinstance(net, ipaddress.IPv4Network):
        problems.append(f"{field}: only IPv4 networks are supported so far")
        return None
    return net


def check(spec: ClusterSpec) -> list[str]:
    """Every cross-field rule; returns one line per problem (empty = valid)."""
    p: list[str] = []
    if not DNS1123_LABEL.match(spec.name) or len(spec.name) > 63:
        p.append(f"name: {spec.name!r} must be a DNS-1123 label (lowercase letters, digits, '-')")

    if spec.kubernetes.version not in SUPPORTED_KUBERNETES:
        p.append(
            f"kubernetes.version: {spec.kubernetes.version} is not supported; "
            f"use one of {', '.join(SUPPORTED_KUBERNETES)}"
        )

    if not spec.nodes:
        p.append("nodes: the cluster has no nodes; list at least one")
    names = Counter(n.name for n in spec.nodes)
    addresses: dict[str, int] = {}
    node_ips: list[tuple[int, ipaddress.IPv4Address]] = []
    for i, node in enumerate(spec.nodes):
        f = f"nodes[{i}]"
        if not DNS1123_LABEL.match(node.name) or len(node.name) > 63:
            p.append(f"{f}.name: {node.name!r} must be a DNS-1123 label (lowercase letters, digits, '-')")
        elif names[node.name] > 1:
            p.append(f"{f}.name: {node.name!r} is used by more than one node; names must be unique")
        try:
            ip = ipaddress.ip_address(node.address)
        except ValueError:
            p.append(f"{f}.address: {node.address!r} is not an IP address; give the node's IPv4 address")
        else:
            if not isinstance(ip, ipaddress.IPv4Address):
                p.append(f"{f}.address: only IPv4 node addresses are supported so far")
            elif node.address in addresses:
                p.append(f"{f}.address: {node.address} is already used by nodes[{addresses[node.address]}]")
            else:
                addresses[node.address] = i
                node_ips.append((i, ip))
        if not node.roles:
            p.append(f"{f}.roles: give at least one of {', '.join(ROLES)}")
        elif len(set(node.roles)) != len(node.roles):
            p.append(f"{f}.roles: a role is listed twice")
        for key, value in node.labels.items():
            problem = label_problem(key, value)
            if problem:
                p.append(f"{f}.labels.{key}: {problem}")
        for j, taint in enumerate(node.taints):
            problem = taint_problem(taint)
            if problem:
                p.append(f"{f}.taints[{j}]: {problem}")

    if spec.nodes and not spec.control_planes:
        p.append("nodes: no node has the role control-plane; give it to at least one node")
    n_etcd = len(spec.etcd_members)
    if spec.nodes and n_etcd == 0:
        p.append("nodes: no node has the role etcd; give it to 1, 3 or 5 nodes")
    elif (n_etcd and n_etcd % 2 == 0) or n_etcd > 7:
        p.append(f"nodes: {n_etcd} etcd members; use an odd count (1, 3, 5 or 7) to keep quorum")

    net = spec.network
    pods = _net("network.pod_subnet", net.pod_subnet, p)
    services = _net("network.service_subnet", net.service_subnet, p)
    if pods and services and pods.overlaps(services):
        p.append(
            f"network.service_subnet: {services} overlaps network.pod_subnet {pods}; choose ranges that do not overlap"
        )
    for field, cidr in (("network.pod_subnet", pods), ("network.service_subnet", services)):
        if cidr is None:
            continue
        for i, ip in node_ips:
            if ip in cidr:
                p.append(f"nodes[{i}].address: {ip} lies inside {field} {cidr}; move one of them")
    if pods:
        if not pods.prefixlen <= net.node_prefix <= 30:
            p.append(
                f"network.node_prefix: {net.node_prefix} must be between the pod_subnet prefix /{pods.prefixlen} and 30"
            )
        else:
            blocks = 2 ** (net.node_prefix - pods.prefixlen)
            if blocks < len(spec.nodes):
                p.append(
                    f"network.node_prefix: /{net.node_prefix} blocks of {pods} give {blocks} "
                    f"blocks for {len(spec.nodes)} nodes; raise node_prefix or widen pod_subnet"
                )
    if services and services.prefixlen > 28:
        p.append("network.service_subnet: too small; use a /28 or larger (a /18 is usual)")

    p += encapsulation_problems(net)
    for i, rr in enumerate(net.route_reflectors):
        if rr not in names:
            p.append(f"network.route_reflectors[{i}]: {rr!r} is not a node in `nodes`")
        elif rr in net.route_reflectors[:i]:
            p.append(f"network.route_reflectors[{i}]: {rr!r} is listed twice; list each reflector once")
    if not 1 <= net.bgp_asn <= 4294967295:
        p.append("network.bgp_asn: must be between 1 and 4294967295")
    if net.policy and spec.kubernetes.proxy_mode == "ipvs":
        # kube-router v2.1.0's policy controller writes back every ipset of the node, from a snapshot of
        # its previous sync, and kube-proxy's ipvs mode keeps its Services in ipsets (kube-router issues
        # #1677, #1732; fixed in v2.6): the two would undo each other's changes.
        p.append(
            "network.policy: kube-router's policy controller (v2.1.0) rewrites every ipset of the node, and "
            "kube-proxy's ipvs mode keeps its Services in ipsets; use kubernetes.proxy_mode iptables or "
            "nftables, or set network.policy: false"
        )
    if not _DNS1123_SUBDOMAIN.match(spec.kubernetes.cluster_domain):
        p.append("kubernetes.cluster_domain: must be a DNS name such as cluster.local")
    if not spec.artifacts.files_repo.startswith(("http://", "https://", "file://")):
        p.append("artifacts.files_repo: must be an http://, https:// or file:// URL")
    if not 15 <= spec.kubernetes.node_monitor_grace_period <= 3600:
        p.append(
            "kubernetes.node_monitor_grace_period: must be between 15 and 3600 seconds "
            "(the kubelet renews its lease every 10 s)"
        )
    p += eviction_problems(spec.kubernetes.eviction_hard)
    p += hardening_problems(spec.hardening)
    p += addons_problems(spec.addons)
    p += chaos_problems(spec.chaos)
    if spec.api_vip is not None:
        p += api_vip_problems(spec.api_vip, addresses, pods, services)
    return p


EVICTION_SIGNALS = (
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
)
_THRESHOLD = re.compile(r"^(\d+(\.\d+)?%|\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?)$")


def eviction_problems(eviction: dict[str, str]) -> list[str]:
    p = []
    for signal, threshold in eviction.items():
        if signal not in EVICTION_SIGNALS:
            near = difflib.get_close_matches(signal, EVICTION_SIGNALS, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            p.append(
                f"kubernetes.eviction_hard.{signal}: not a kubelet eviction signal; "
                f"{hint}one of {', '.join(EVICTION_SIGNALS)}"
            )
        elif not _THRESHOLD.match(str(threshold)) or (
            str(threshold).endswith("%") and float(str(threshold)[:-1]) > 100
        ):
            p.append(
                f"kubernetes.eviction_hard.{signal}: {threshold!r} is not a threshold; "
                "write a percentage (10%) or a quantity (500Mi)"
            )
    return p


# Bytes a tunnel adds to every packet: the pod MTU is the nodes' MTU minus this.
TUNNEL_OVERHEAD = {"none": 0, "vxlan": 50, "ipip": 20}
MIN_POD_MTU = 1280  # IPv6's minimum link MTU; below it pods (and some CNI tools) misbehave
MAX_MTU = 9216
NODE_PORTS = range(30000, 32768)  # kube-apiserver's default --service-node-port-range (TCP and UDP)


def pod_mtu(net: Network) -> int:
    return net.mtu - TUNNEL_OVERHEAD[net.encapsulation]


def encapsulation_problems(net: Network) -> list[str]:
    p: list[str] = []
    overhead = TUNNEL_OVERHEAD[net.encapsulation]
    if net.mtu > MAX_MTU:
        p.append(f"network.mtu: {net.mtu} is above {MAX_MTU} (the largest jumbo frame); give the nodes' MTU")
    elif net.mtu - overhead < MIN_POD_MTU:
        tunnel = f" minus {overhead} for {net.encapsulation}" if overhead else ""
        p.append(
            f"network.mtu: {net.mtu} is too small: the pods would get {net.mtu - overhead}{tunnel}; "
            f"give the MTU of the nodes' network, at least {MIN_POD_MTU + overhead}"
        )
    if net.encapsulation_mode == "cross-subnet" and net.encapsulation == "none":
        p.append(
            "network.encapsulation_mode: cross-subnet encapsulates traffic to nodes on other subnets, "
            "and encapsulation is none; set network.encapsulation to vxlan (or ipip)"
        )
    if not 1024 <= net.vxlan_port <= 65535:
        p.append(f"network.vxlan_port: {net.vxlan_port} must be a UDP port between 1024 and 65535 (4789 is usual)")
    elif net.vxlan_port in NODE_PORTS:
        p.append(
            f"network.vxlan_port: {net.vxlan_port} lies in the NodePort range 30000-32767, where a Service may "
            "take it; use another (4789 is usual)"
        )
    if not 1 <= net.vxlan_vni <= 16777215:
        p.append(f"network.vxlan_vni: {net.vxlan_vni} must be between 1 and 16777215 (a 24-bit VXLAN id)")
    return p


def chaos_problems(c: Chaos) -> list[str]:
    p: list[str] = []
    if not DNS1123_LABEL.match(c.namespace) or len(c.namespace) > 63:
        p.append(f"chaos.namespace: {c.namespace!r} is not a namespace name (DNS-1123 label)")
    if c.canary_replicas is not None and not 1 <= c.canary_replicas <= 50:
        p.append("chaos.canary_replicas: must be between 1 and 50 (or left out: one per node)")
    if not 1 <= c.settle_s <= 600:
        p.append("chaos.settle_s: must be between 1 and 600 seconds")
    for experiment, limits in c.limits.items():
        if experiment not in CHAOS_EXPERIMENTS:
            hint = difflib.get_close_matches(experiment, CHAOS_EXPERIMENTS, n=1)
            what = f"did you mean `{hint[0]}`?" if hint else f"use one of {', '.join(CHAOS_EXPERIMENTS)}"
            p.append(f"chaos.limits.{experiment}: not an experiment; {what}")
            continue
        for name, value in limits.items():
            if name not in CHAOS_LIMITS:
                hint = difflib.get_close_matches(name, list(CHAOS_LIMITS), n=1)
                what = f"did you mean `{hint[0]}`?" if hint else f"known limits: {', '.join(CHAOS_LIMITS)}"
                p.append(f"chaos.limits.{experiment}.{name}: unknown limit; {what}")
            elif value is not None and name.endswith("_pct") and not 0 <= value <= 100:
                p.append(f"chaos.limits.{experiment}.{name}: a percentage, between 0 and 100")
            elif value is not None and value < 0:
                p.append(f"chaos.limits.{experiment}.{name}: must be 0 or more seconds")
    return p


def addons_problems(a: Addons) -> list[str]:
    p: list[str] = []
    if not a.local_path.path.startswith("/") or a.local_path.path.rstrip("/") in ("", "/etc", "/var", "/usr"):
        p.append(
            "addons.local_path.path: must be an absolute directory of its own, such as /opt/local-path-provisioner"
        )
    return p


def api_vip_problems(
    vip: ApiVip,
    node_addresses: dict[str, int],
    pods: ipaddress.IPv4Network | None,
    services: ipaddress.IPv4Network | None,
) -> list[str]:
    """The VIP's own rules; that it lies in the control planes' subnet is checked by preflight,
    which sees the nodes' interfaces."""
    p: list[str] = []
    try:
        ip = ipaddress.ip_address(vip.address)
    except ValueError:
        return [
            f"api_vip.address: {vip.address!r} is not an IP address; give a free address of the control planes' subnet"
        ]
    if not isinstance(ip, ipaddress.IPv4Address):
        p.append("api_vip.address: only an IPv4 VIP is supported so far")
    elif vip.address in node_addresses:
        p.append(
            f"api_vip.address: {vip.address} is the address of nodes[{node_addresses[vip.address]}]; "
            "pick a free address of the control planes' subnet"
        )
    for field, cidr in (("network.pod_subnet", pods), ("network.service_subnet", services)):
        if cidr is not None and ip in cidr:
            p.append(f"api_vip.address: {ip} lies inside {field} {cidr}; pick an address of the control planes' subnet")
    if vip.interface is not None and not re.match(r"^[A-Za-z0-9_.@-]{1,15}$", vip.interface):
        p.append(f"api_vip.interface: {vip.interface!r} is not an interface name; leave it out to use the nodes' own")
    if not 1 <= vip.virtual_router_id <= 255:
        p.append("api_vip.virtual_router_id: must be between 1 and 255")
    return p


def hardening_problems(h: Hardening) -> list[str]:
    p: list[str] = []
    for name in ("max_age_days", "max_backups", "max_size_mb"):
        if getattr(h.audit_log, name) < 1:
            p.append(f"hardening.audit_log.{name}: must be 1 or more")
    suites = h.tls.cipher_suites
    for i, suite in enumerate(suites):
        if suite not in STRONG_CIPHER_SUITES:
            p.append(
                f"hardening.tls.cipher_suites[{i}]: {suite!r} is not an ECDHE suite with AES-GCM or "
                f"ChaCha20-Poly1305; use some of {', '.join(STRONG_CIPHER_SUITES)}"
            )
        elif suite in suites[:i]:
            p.append(f"hardening.tls.cipher_suites[{i}]: {suite!r} is listed twice")
    if h.tls.min_version == "VersionTLS12" and not any("_ECDSA_" in s for s in suites):
        p.append(
            "hardening.tls.cipher_suites: the cluster's certificates have ECDSA keys; "
            "list at least one TLS_ECDHE_ECDSA_* suite, or TLS 1.2 clients cannot connect"
        )
    ps = h.pod_security
    for i, ns in enumerate(ps.exempt_namespaces):
        if not DNS1123_LABEL.match(ns) or len(ns) > 63:
            p.append(f"hardening.pod_security.exempt_namespaces[{i}]: {ns!r} is not a namespace name (DNS-1123 label)")
        elif ns in ps.exempt_namespaces[:i]:
            p.append(f"hardening.pod_security.exempt_namespaces[{i}]: {ns!r} is listed twice")
    for name in ("server_qps", "server_burst", "namespace_qps", "namespace_burst"):
        if getattr(h.event_rate_limit, name) < 1:
            p.append(f"hardening.event_rate_limit.{name}: must be 1 or more")
    erl = h.event_rate_limit
    for scope in ("server", "namespace"):
        if getattr(erl, f"{scope}_burst") < getattr(erl, f"{scope}_qps"):
            p.append(f"hardening.event_rate_limit.{scope}_burst: must be at least {scope}_qps")
    return p


def label_problem(key: str, value: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return "the key prefix must be a DNS subdomain, as in example.com/disk"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return "the key must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return f"the value {value!r} must be at most 63 alphanumerics, '-', '_' or '.'"
    return None


def taint_problem(taint: str) -> str | None:
    """Taints are written as kubectl writes them: ``key[=value]:Effect``."""
    body, sep, effect = taint.rpartition(":")
    if not sep:
        return f"{taint!r} needs an effect: key=value:NoSchedule"
    if effect not in TAINT_EFFECTS:
        return f"effect {effect!r} must be one of {', '.join(TAINT_EFFECTS)}"
    key, _, value = body.partition("=")
    problem = label_problem(key, value)
    return problem and f"{taint!r}: {problem}"
