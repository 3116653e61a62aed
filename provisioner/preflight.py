"""Preflight: read-only checks of every host over SSH (paramiko), before any change.

One SSH session per host runs one read-only probe script; the facts it prints are judged
here. Hosts are checked in parallel. Nothing is written on any host.

Each host's SSH key is pinned in the cluster's known_hosts (ssh.py): the first contact
records it, every later one must match it; a host whose key changed fails its "host key"
check and nothing is run there (``--accept-host-key NODE`` re-pins).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from provisioner import ssh
from provisioner.defaults import PORTS
from provisioner.errors import InputError, ProvisionerError
from provisioner.spec import ClusterSpec, Node

SUPPORTED_OS = {"debian": ("12", "13"), "ubuntu": ("22.04", "24.04")}

SUPPORTED_OS_TEXT = ", ".join(f"{k} {v}" for k, vs in SUPPORTED_OS.items() for v in vs)

# port -> the processes that may hold it (our own services on a re-run)
PORTS_ALL = {
    PORTS["kubelet_port"]: ("kubelet",),
    PORTS["kube_proxy_healthz_port"]: ("kube-proxy",),
    PORTS["bgp_port"]: ("bird",),
}
PORTS_CP = {
    PORTS["kube_apiserver_port"]: ("kube-apiserver",),
    PORTS["kube_controller_manager_port"]: ("kube-controller",),
    PORTS["kube_scheduler_port"]: ("kube-scheduler",),
}
PORTS_ETCD = {PORTS["etcd_client_port"]: ("etcd",), PORTS["etcd_peer_port"]: ("etcd",)}

PROBE = r"""
echo "python3=$(command -v python3 || true)"
. /etc/os-release 2>/dev/null && echo "os_id=$ID" && echo "os_version=$VERSION_ID"
echo "swap=$(awk 'NR>1' /proc/swaps | wc -l)"
echo "cgroupfs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
echo "uid=$(id -u)"
echo "user=$(id -un)"
ss="ss"
if [ "$(id -u)" = 0 ]; then echo sudo=root
elif ! command -v sudo >/dev/null 2>&1; then echo sudo=missing
elif sudo -n true 2>/dev/null; then echo sudo=ok; ss="sudo -n ss"
else echo sudo=no; fi
echo "arch=$(uname -m)"
($ss -ltnpH 2>/dev/null || true) | awk '{n=split($4,a,":"); p=a[n]; m=$0;
  sub(/.*users:\(\("/,"",m); sub(/".*/,"",m); print "listen=" p "/" m}'
(ip -o -4 addr show 2>/dev/null || true) | awk '{print "addr=" $2 "=" $4}'
"""
# On a control plane of a cluster with an API VIP: does anything answer on the VIP already?
VIP_PROBE = "if ping -c1 -W1 {vip} >/dev/null 2>&1; then echo vip_answers=1; else echo vip_answers=0; fi\n"
# Whether the running kernel has a module: in it now (/sys/module, /proc/modules), built in
# (modules.builtin), loadable (a .ko under /lib/modules/<release>), or not at all. A machine
# container sees its host's kernel through /sys and /proc, and may have no /lib/modules. A tunnel's
# module is also found by making a device of its kind in a throw-away network namespace (`unshare -n`;
# the node's own network is not touched): a machine container of this lab sees no /sys/module.
KMOD_PROBE = r"""
m={module}; r=$(uname -r); root=""; [ "$(id -u)" = 0 ] || root="sudo -n"
if [ -d /sys/module/$m ] || grep -qs "^$m " /proc/modules; then s=loaded
elif grep -qs "/$m\.ko" /lib/modules/$r/modules.builtin; then s=builtin
elif {device_test}; then s=loaded
elif [ -n "$(find /lib/modules/$r -name "$m.ko*" 2>/dev/null | head -n 1)" ]; then s=module
else s=missing; fi
echo "kmod_$m=$s"
echo "kernel=$r"
"""


# network.encapsulation -> its kernel module, and the device that shows the kernel has it
TUNNEL_MODULES = {"vxlan": "vxlan", "ipip": "ipip"}
DEVICE_TESTS = {
    "vxlan": "$root unshare -n sh -c 'ip link add pv-probe type vxlan id 1 dstport 4789' >/dev/null 2>&1",
    "ipip": "$root unshare -n sh -c 'ip link add pv-probe type ipip local 192.0.2.1' >/dev/null 2>&1",
}


def kmod_probe(module: str) -> str:
    return KMOD_PROBE.format(module=module, device_test=DEVICE_TESTS.get(module, "false"))


def kernel_modules(spec: ClusterSpec) -> dict[str, tuple[str, str]]:
    """The kernel modules the cluster file needs on every node -> (the setting that needs it,
    what to do on a kernel without it)."""
    needed = {}
    if spec.kubernetes.proxy_mode == "ipvs":
        needed["ip_vs"] = ("kubernetes.proxy_mode ipvs", "set kubernetes.proxy_mode to iptables or nftables")
    if module := TUNNEL_MODULES.get(spec.network.encapsulation):
        other = "vxlan" if module == "ipip" else "ipip"
        needed[module] = (
            f"network.encapsulation {spec.network.encapsulation}",
            f"set network.encapsulation to {other} (or none, with every node on one L2 subnet)",
        )
    return needed


def probe_for(node: Node, spec: ClusterSpec) -> str:
    """The probe script for one host (the VIP's address is an IPv4 address: spec.py checks it)."""
    script = PROBE + "".join(kmod_probe(m) for m in kernel_modules(spec))
    if spec.api_vip is not None and "control-plane" in node.roles:
        script += VIP_PROBE.format(vip=spec.api_vip.address)
    return script


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # a finding that does not stop the run


@dataclass
class HostReport:
    name: str
    address: str
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.warning for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and not c.warning]

    @property
    def cgroup_version(self) -> int | None:
        fs = self.facts.get("cgroupfs")
        return {"cgroup2fs": 2, "tmpfs": 1}.get(fs or "")


class PreflightFailed(ProvisionerError):
    def __init__(self, reports: list[HostReport]):
        self.reports = reports
        bad = [f"{r.name} ({r.address}): {c.name}: {c.detail}" for r in reports for c in r.failures()]
        super().__init__("preflight failed; nothing was changed:\n" + "\n".join(bad))


def _ports_for(node: Node, spec: ClusterSpec) -> dict[int, tuple[str, ...]]:
    ports = dict(PORTS_ALL)
    ports[spec.api_lb.port] = ("nginx", "haproxy")
    if "control-plane" in node.roles:
        ports.update(PORTS_CP)
    if "etcd" in node.roles:
        ports.update(PORTS_ETCD)
    return ports


def _parse(output: str) -> tuple[dict[str, str], dict[int, str]]:
    """The probe's ``key=value`` lines; ``listen=PORT/PROCESS`` lines go into the second
    dict, ``addr=IFACE=CIDR`` lines into one fact, ``addrs``, as ``IFACE=CIDR`` joined by spaces."""
    facts: dict[str, str] = {}
    listening: dict[int, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "addr":
            facts["addrs"] = " ".join(filter(None, [facts.get("addrs", ""), value.strip()]))
        elif key == "listen":
            port, _, proc = value.partition("/")
            if port.isdigit():
                listening.setdefault(int(port), proc)
        else:
            facts[key] = value.strip()
    return facts, listening


def judge(node: Node, spec: ClusterSpec, facts: dict[str, str], listening: dict[int, str]) -> list[Check]:
    """Turn the probe's facts into checks (pure; unit-tested)."""
    checks: list[Check] = [_sudo(facts)]
    py = facts.get("python3", "")
    checks.append(Check("python3", bool(py), py or "python3 not found; install it (apt-get install python3)"))
    os_id, os_ver = facts.get("os_id", "?"), facts.get("os_version", "?")
    supported = os_ver in SUPPORTED_OS.get(os_id, ())
    checks.append(
        Check(
            "os",
            supported,
            f"{os_id} {os_ver}" + ("" if supported else f" is not supported; use one of {SUPPORTED_OS_TEXT}"),
        )
    )
    arch = facts.get("arch", "?")
    checks.append(
        Check("arch", arch == "x86_64", arch if arch == "x86_64" else f"{arch}: only x86_64 artifacts are mirrored")
    )
    swaps = int(facts.get("swap", "0") or 0)
    checks.append(
        Check(
            "swap",
            swaps == 0,
            "off" if swaps == 0 else f"{swaps} swap device(s) on; create turns swap off",
            warning=swaps != 0,
        )
    )
    cg = {"cgroup2fs": 2, "tmpfs": 1}.get(facts.get("cgroupfs", ""), None)
    if cg == 2:
        checks.append(Check("cgroup", True, "v2"))
    elif cg == 1:
        checks.append(
            Check("cgroup", False, "v1: kubelet gets failCgroupV1=false (deprecated; move to v2)", warning=True)
        )
    else:
        checks.append(Check("cgroup", False, f"unknown cgroup filesystem {facts.get('cgroupfs')!r}"))
    busy = []
    for port, owners in sorted(_ports_for(node, spec).items()):
        proc = listening.get(port)
        if proc is not None and not any(proc.startswith(o) for o in owners):
            busy.append(f"{port} ({proc or 'unknown process'})")
    checks.append(
        Check("ports", not busy, "free" if not busy else "in use: " + ", ".join(busy) + "; stop what holds them")
    )
    if spec.api_vip is not None and "control-plane" in node.roles:
        checks.append(vip_subnet_check(node, spec, facts.get("addrs", "")))
    checks += [kernel_module_check(m, need, facts) for m, need in kernel_modules(spec).items()]
    return checks


def kernel_module_check(module: str, need: tuple[str, str], facts: dict[str, str]) -> Check:
    """``module`` is in the node's kernel, or can be loaded; otherwise the setting that needs it
    cannot work there (``need``: the setting, what to do instead)."""
    state = facts.get(f"kmod_{module}", "")
    release = facts.get("kernel") or "?"
    name = f"kernel {module}"
    if state in ("loaded", "builtin"):
        return Check(name, True, f"{module} in kernel {release}")
    if state == "module":
        return Check(name, True, f"{module} loadable (/lib/modules/{release})")
    setting, instead = need
    return Check(
        name,
        False,
        f"{setting} needs the kernel module {module}, and kernel {release} has none (not in /proc/modules or "
        f"/sys/module/{module}, nor under /lib/modules/{release}); use a kernel with it, or {instead}",
    )


def _sudo(facts: dict[str, str]) -> Check:
    sudo = facts.get("sudo", "no")
    if sudo == "root":
        return Check("sudo", True, "root")
    if sudo == "ok":
        return Check("sudo", True, "passwordless sudo")
    user = facts.get("user") or "?"
    who = f"{user} (uid {facts.get('uid', '?')})"
    fix = f"log in as root (ssh.user), or allow it: '{user} ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/{user}"
    if sudo == "missing":
        return Check("sudo", False, f"{who} is not root and sudo is not installed; {fix}")
    return Check("sudo", False, f"{who} is not root and has no passwordless sudo (sudo -n true failed); {fix}")


def _unreachable(t: ssh.SshTarget, exc: OSError, timeout: float) -> str:
    """Why nothing answers on the node's SSH port, and what to look at."""
    where = f"{t.host}:{t.port}"
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"cannot connect to {where}: connection refused; is sshd running on {t.name} and listening on "
            f"port {t.port} (ssh.port, or the node's ssh_port)?"
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"cannot connect to {where}: no answer in {timeout:.0f} s; is {t.name} up, and port {t.port} open?"
    return f"cannot connect to {where}: {exc.strerror or exc}"


def interfaces(addrs: str) -> dict[str, list[ipaddress.IPv4Interface]]:
    """The probe's ``addrs`` fact (``IFACE=CIDR`` words) as interface -> its IPv4 addresses."""
    out: dict[str, list[ipaddress.IPv4Interface]] = {}
    for word in addrs.split():
        name, _, cidr = word.partition("=")
        try:
            out.setdefault(name, []).append(ipaddress.IPv4Interface(cidr))
        except ValueError:
            continue
    return out


def vip_subnet_check(node: Node, spec: ClusterSpec, addrs: str) -> Check:
    """The API VIP lies in the subnet of the interface keepalived will put it on: api_vip.interface,
    or the one that carries the node's address."""
    assert spec.api_vip is not None
    vip = ipaddress.IPv4Address(spec.api_vip.address)
    ifaces = interfaces(addrs)
    if not ifaces:
        return Check("api_vip", False, "could not read this node's interfaces (`ip -o -4 addr`); install iproute2")
    wanted = spec.api_vip.interface
    if wanted is None:
        wanted = next((n for n, a in ifaces.items() if any(str(i.ip) == node.address for i in a)), None)
        if wanted is None:
            return Check(
                "api_vip",
                False,
                f"no interface carries {node.address}; set api_vip.interface to the interface on the "
                "control planes' subnet",
            )
    elif wanted not in ifaces:
        return Check(
            "api_vip",
            False,
            f"api_vip.interface: {wanted} has no IPv4 address on this node (it has {', '.join(sorted(ifaces))})",
        )
    subnets = [i.network for i in ifaces[wanted] if i.network.prefixlen < 32]  # a held VIP is a /32
    if any(vip in net for net in subnets):
        net = next(net for net in subnets if vip in net)
        return Check("api_vip", True, f"{vip} in {wanted}'s subnet {net}")
    have = ", ".join(str(n) for n in subnets) or "none"
    return Check(
        "api_vip",
        False,
        f"api_vip.address: {vip} is not in the subnet of {wanted} ({have}) on this node; "
        "pick a free address of the control planes' subnet",
    )


def vip_in_use(spec: ClusterSpec, reports: list[HostReport]) -> str | None:
    """On a cluster whose control planes run no API server yet, nothing may answer on the VIP
    (a ping from a control plane): another machine would hold it. Returns the problem, if any.
    A running cluster's VIP answers from the control plane that holds it."""
    if spec.api_vip is None:
        return None
    cps = {n.name for n in spec.control_planes}
    mine = [r for r in reports if r.name in cps and r.facts]
    if not mine or any(f"{PORTS['kube_apiserver_port']}" in r.facts.get("listening_ports", "").split() for r in mine):
        return None
    held = (str(i.ip) for r in mine for a in interfaces(r.facts.get("addrs", "")).values() for i in a)
    if spec.api_vip.address in held:
        return None  # held by a control plane (keepalived of an earlier run)
    if any(r.facts.get("vip_answers") == "1" for r in mine):
        return (
            f"api_vip.address: {spec.api_vip.address} already answers ping, and no control plane holds it: "
            "another machine uses it; pick a free address"
        )
    return None


def check_host(
    node: Node,
    spec: ClusterSpec,
    cluster_dir: Path,
    timeout: float = 8.0,
    accept: bool = False,
    key: ssh.KeyFile | None = None,
) -> HostReport:
    """Check one host. Its SSH host key must be the one pinned in the cluster's known_hosts
    (first contact pins it); on a changed key nothing is done on the host. ``accept``
    re-pins the key the host offers now. ``key``: what ssh.check_key found (an encrypted
    key logs in through ssh-agent)."""
    report = HostReport(node.name, node.address)
    t = ssh.target(spec, node, cluster_dir)
    try:
        sock = socket.create_connection((t.host, t.port), timeout=timeout)
    except OSError as exc:
        report.checks.append(Check("reachable", False, _unreachable(t, exc, timeout)))
        return report
    report.checks.append(Check("reachable", True, f"{t.host}:{t.port}"))
    client, policy = ssh.pinned_client(t, replace=accept)
    agent = key is not None and key.encrypted
    with_what = f"the keys of ssh-agent ({t.key_file} is encrypted)" if agent else str(t.key_file)
    try:
        try:
            ssh.connect(
                client, t, sock=sock, timeout=timeout, auth_timeout=timeout, banner_timeout=timeout, agent=agent
            )
        except ssh.HostKeyChanged as exc:
            report.checks.append(Check("host key", False, str(exc)))
            return report
        except paramiko.AuthenticationException:
            _host_key_checked(report, client, policy)
            report.checks.append(
                Check(
                    "ssh key",
                    False,
                    f"{t.user}@{t.host} refused {with_what}: no user {t.user} there, or the key is not in its "
                    f"~/.ssh/authorized_keys; check ssh.user (or the node's ssh_user) and ssh.private_key",
                )
            )
            return report
        except (paramiko.SSHException, OSError) as exc:
            report.checks.append(Check("ssh key", False, f"{t.user}@{t.host} with {with_what}: {exc}"))
            return report
        _host_key_checked(report, client, policy)
        report.checks.append(Check("ssh key", True, f"{t.user} with {'ssh-agent' if agent else t.key_file.name}"))
        _, stdout, _ = client.exec_command(probe_for(node, spec), timeout=timeout * 2)
        output = stdout.read().decode(errors="replace")
    finally:
        client.close()
    facts, listening = _parse(output)
    facts["listening_ports"] = " ".join(str(p) for p in sorted(listening))
    report.facts = facts
    report.checks.extend(judge(node, spec, facts, listening))
    return report


def _host_key_checked(report: HostReport, client: paramiko.SSHClient, policy: ssh.PinOnFirstUse) -> None:
    transport = client.get_transport()
    key = transport.get_remote_server_key() if transport is not None else None
    fp = ssh.fingerprint(key) if key is not None else "?"
    how = f"pinned now in {policy.target.known_hosts.name}" if policy.recorded else "matches the pinned key"
    report.checks.append(Check("host key", True, f"{fp} ({how})"))


def run(
    spec: ClusterSpec,
    nodes: list[Node] | None = None,
    timeout: float = 8.0,
    *,
    cluster_dir: Path,
    accept: Collection[str] = (),
) -> list[HostReport]:
    """Check the hosts in parallel; the reports come back in the cluster file's order. Host
    keys are pinned in ``cluster_dir``'s known_hosts; the nodes named in ``accept`` get the
    key they offer now pinned in place of the old one."""
    targets = nodes if nodes is not None else spec.nodes
    unknown = sorted(set(accept) - {n.name for n in spec.nodes})
    if unknown:
        raise InputError(
            f"--accept-host-key: no node named {', '.join(unknown)} in the cluster file; "
            f"its nodes are {', '.join(n.name for n in spec.nodes)}"
        )
    try:
        key = ssh.check_key(ssh.key_file(spec))
    except ssh.KeyProblem as exc:
        # the same key opens every node: each is refused, named, and nothing is tried
        return [HostReport(n.name, n.address, [Check("ssh key", False, str(exc))]) for n in targets]
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(targets)))) as pool:
        reports = list(pool.map(lambda n: check_host(n, spec, cluster_dir, timeout, n.name in accept, key), targets))
    if problem := vip_in_use(spec, reports):
        first = next(r for r in reports if r.name in {n.name for n in spec.control_planes})
        first.checks.append(Check("api_vip in use", False, problem))
    return reports
