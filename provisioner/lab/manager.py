"""The local lab: N machine-container nodes on a private bridge, driven by one state file.

``lab up`` is idempotent (running nodes are kept, missing ones are added); ``lab down``
removes the nodes, the bridge and the host services, and leaves nothing of the lab.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner import ssh
from provisioner.lab import base_image, cluster_file, nspawn, services
from provisioner.lab.host import CACHE_ROOT, LAB_EVICTION_HARD, LAB_ROOT, LabError, require_disk, require_host
from provisioner.state import ClusterDir

DEFAULT_SUBNET = "192.168.250.0/24"
DEFAULT_MIRROR = CACHE_ROOT / "mirror"


@dataclass
class LabNode:
    name: str
    ip: str
    roles: list[str]


@dataclass
class LabState:
    name: str
    subnet: str
    bridge: str
    nodes: list[LabNode] = field(default_factory=list)
    # the nodes the cluster file was given (None: a lab.json from before it was kept: all of them)
    filed: list[str] | None = None
    # a two-subnet lab: the second subnet, on a bridge of its own; the host routes between them
    second_subnet: str | None = None

    @property
    def subnets(self) -> list[str]:
        return [self.subnet] + ([self.second_subnet] if self.second_subnet else [])

    def bridge_of(self, subnet: str) -> str:
        return self.bridge if subnet == self.subnet else second_bridge(self.name)

    def subnet_of(self, ip: str) -> str:
        addr = ipaddress.ip_address(ip)
        return next((s for s in self.subnets if addr in ipaddress.ip_network(s)), self.subnet)

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        nodes = [LabNode(**n) for n in data["nodes"]]
        return cls(data["name"], data["subnet"], data["bridge"], nodes, data.get("filed"), data.get("second_subnet"))

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "name": self.name,
                    "subnet": self.subnet,
                    "bridge": self.bridge,
                    "nodes": [vars(n) for n in self.nodes],
                    "filed": self.filed,
                    "second_subnet": self.second_subnet,
                },
                indent=2,
            )
            + "\n"
        )


START_SSH_TIMEOUT = 240.0  # seconds `lab start` waits for a restarted node's sshd


def node_layout(count: int, control_planes: int) -> list[tuple[str, list[str]]]:
    """Names and roles: cp1..cpM (etcd on an odd number of them), then w1..."""
    if control_planes < 1 or control_planes > count:
        raise LabError(f"--control-planes must be between 1 and --nodes ({count})")
    etcd = control_planes if control_planes % 2 else control_planes - 1
    out = []
    for i in range(1, control_planes + 1):
        out.append((f"cp{i}", (["etcd"] if i <= etcd else []) + ["control-plane"]))
    for i in range(1, count - control_planes + 1):
        out.append((f"w{i}", ["worker"]))
    return out


def second_bridge(lab: str) -> str:
    return f"pvl2-{lab}"[:15]


def next_subnet(subnet: str) -> str:
    """The subnet of the same size right after ``subnet`` (``lab up --subnets 2`` without a second --subnet)."""
    net = ipaddress.ip_network(subnet)
    return str(ipaddress.ip_network(f"{net.broadcast_address + 1}/{net.prefixlen}"))


def node_subnet(name: str, subnets: list[str]) -> str:
    """Where a node sits in a two-subnet lab: the control planes on the first subnet (etcd, the
    API VIP and its VRRP stay on one L2 segment), the workers alternating, w1 on the second."""
    if len(subnets) == 1 or name.startswith("cp"):
        return subnets[0]
    return subnets[int(name[1:]) % 2]


def node_host_number(name: str) -> int:
    """cpK -> .10+K, wK -> .20+K (then .120+K beyond 99 workers is not needed in a lab)."""
    if name.startswith("cp"):
        return 10 + int(name[2:])
    return 20 + int(name[1:])


def pick_vip(subnet: str, used: set[str]) -> str:
    """A free address of the lab's bridge for the API VIP: the subnet's .250 in a /24 (the sixth
    address from the top), or the next free one below it. The host has .1, the nodes .11-.19
    and .21 up, the nodes' default route points at the second address from the top."""
    net = ipaddress.ip_network(subnet)
    taken = used | {str(net[1]), str(net[-2])}
    for offset in range(6, net.num_addresses - 1):
        candidate = str(net[-offset])
        if candidate not in taken:
            return candidate
    raise LabError(f"--subnet: {subnet} has no free address left for the API VIP")


Say = Callable[[str], None]


class Lab:
    def __init__(self, name: str = "lab", state_parent: Path | None = None, root: Path = LAB_ROOT):
        self.name = name
        self.cluster = ClusterDir.for_cluster(name, state_parent)
        self.dir = self.cluster.root / "lab"
        self.root = root / name
        self.state_file = self.dir / "lab.json"

    @property
    def key(self) -> Path:
        return self.cluster.root / "ssh" / "id_ed25519"

    @property
    def cluster_file(self) -> Path:
        return self.cluster.root / "cluster.yaml"

    def state(self) -> LabState | None:
        return LabState.load(self.state_file)

    def _ensure_key(self) -> str:
        pub = self.key.with_suffix(".pub")
        if not self.key.exists():
            self.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            k = Ed25519PrivateKey.generate()
            self.key.write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
                )
            )
            self.key.chmod(0o600)
            pub.write_bytes(
                k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                + b" provisioner-lab\n"
            )
        return pub.read_text()

    def _node_spec(self, st: LabState, node: LabNode, proxy: str, pub: str) -> nspawn.NodeSpec:
        subnet = st.subnet_of(node.ip)
        net = ipaddress.ip_network(subnet)
        return nspawn.NodeSpec(
            lab=self.name,
            name=node.name,
            address=f"{node.ip}/{net.prefixlen}",
            gateway=str(net[-2]),
            bridge=st.bridge_of(subnet),
            proxy=proxy,
            rootfs=self.root / node.name,
            public_key=pub,
            # the other subnet through the host's address on this one
            routes=tuple((other, str(net[1])) for other in st.subnets if other != subnet),
        )

    def _proxy_url(self, st: LabState) -> str:
        net = ipaddress.ip_network(st.subnet)
        return f"http://{net[1]}:{services.APT_PROXY_PORT}"

    def up(
        self,
        nodes: int = 3,
        control_planes: int = 1,
        subnet: str | None = None,
        mirror_dir: Path = DEFAULT_MIRROR,
        say: Say = print,
        second_subnet: str | None = None,
    ) -> dict[str, float]:
        """``second_subnet``: a two-subnet lab (the workers alternate between the two bridges, and
        the host routes between them); its cluster file says encapsulation vxlan, cross-subnet."""
        require_host()
        require_disk(self.root)
        timings: dict[str, float] = {}
        self.cluster.ensure()
        self.dir.mkdir(parents=True, exist_ok=True)
        st = self.state()
        if st is None:
            self._refuse_foreign()
        if st and subnet and subnet != st.subnet:
            raise LabError(f"--subnet: lab {self.name} already uses {st.subnet}; run `lab down` first to change it")
        net = ipaddress.ip_network(subnet or (st.subnet if st else DEFAULT_SUBNET))
        if not isinstance(net, ipaddress.IPv4Network) or net.num_addresses < 16 + nodes:
            raise LabError(f"--subnet: {net} is too small for {nodes} nodes; use a /24")
        if st and second_subnet and second_subnet != st.second_subnet:
            raise LabError(
                f"--subnet: lab {self.name} already uses {', '.join(st.subnets)}; run `lab down` first to change them"
            )
        second = ipaddress.ip_network(second_subnet or (st.second_subnet if st and st.second_subnet else net))
        if second_subnet and (not isinstance(second, ipaddress.IPv4Network) or second.prefixlen != net.prefixlen):
            raise LabError(f"--subnet: the second subnet {second} must be an IPv4 subnet the size of {net}")
        if second_subnet and second.overlaps(net):
            raise LabError(f"--subnet: the two subnets {net} and {second} overlap; give two distinct subnets")
        if st is None:
            st = LabState(self.name, str(net), f"pvl-{self.name}"[:15], second_subnet=second_subnet and str(second))
        for sub in st.subnets:
            if user := services.subnet_user(ipaddress.ip_network(sub), st.bridge_of(sub)):
                raise LabError(f"--subnet: {sub} is already used on this host by {user}; choose another subnet")
        have = {n.name for n in st.nodes}
        for name, roles in node_layout(nodes, control_planes):
            if name not in have:
                where = ipaddress.ip_network(node_subnet(name, st.subnets))
                st.nodes.append(LabNode(name, str(where[node_host_number(name)]), roles))
        filed = set(have if st.filed is None else st.filed)
        merged = self._merged_cluster_file([n for n in st.nodes if n.name not in filed])  # refused here
        st.save(self.state_file)

        t = time.monotonic()
        say(
            "base image: building with debootstrap (once) ..."
            if not (base_image.image_dir() / ".complete").exists()
            else "base image: cached"
        )
        base, built = base_image.ensure(log=self.dir / "debootstrap.log")
        timings["base_image_s"] = built
        t = time.monotonic()
        services.raise_inotify_limit()
        host_ip = services.bridge_up(st.bridge, net)
        if st.second_subnet:
            services.bridge_up(second_bridge(self.name), ipaddress.ip_network(st.second_subnet))
            for bridge in (st.bridge, second_bridge(self.name)):
                services.forwarding_on(bridge)
        proxy = services.apt_proxy_up(self.dir, host_ip)
        files_repo = services.mirror_up(self.dir, host_ip, mirror_dir)
        pub = self._ensure_key()
        specs = [self._node_spec(st, n, proxy, pub) for n in st.nodes]
        to_boot = [s for s in specs if nspawn.pid_of(s, self.dir) is None]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda s: nspawn.make_rootfs(s, base), to_boot))
        self.pin_host_keys(specs)
        for s in to_boot:
            nspawn.boot(s, self.dir)
        say(f"nodes: {len(to_boot)} booting, {len(specs) - len(to_boot)} already running")
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            list(pool.map(lambda s: nspawn.wait_ssh(s.ip), specs))
        timings["nodes_up_s"] = time.monotonic() - t
        if merged is None:
            self.write_cluster_file(st, files_repo or f"http://{host_ip}:{services.MIRROR_PORT}")
        elif merged.added:
            self.cluster_file.write_text(merged.text)
            say(f"cluster file: {', '.join(merged.added)} appended to {self.cluster_file}, the rest kept as it was")
        st.filed = [n.name for n in st.nodes]
        st.save(self.state_file)
        return timings

    def _merged_cluster_file(self, new: list[LabNode]) -> cluster_file.Merged | None:
        """The existing cluster file with the lab's new nodes appended, the user's edits (a node
        deleted or renamed too) kept: cluster_file.merge; None when there is no file yet."""
        if not self.cluster_file.exists():
            return None
        nodes = [{"name": n.name, "address": n.ip, "roles": n.roles} for n in new]
        return cluster_file.merge(self.cluster_file.read_text(), nodes, str(self.cluster_file))

    @property
    def known_hosts(self) -> Path:
        return ssh.known_hosts_file(self.cluster.root)

    def pin_host_keys(self, specs: list[nspawn.NodeSpec]) -> None:
        """Pin each node's own host keys in the cluster's known_hosts, so that the first
        contact (preflight, Ansible) is already verified; a re-made node's line is replaced."""
        for s in specs:
            keys = [ssh.public_key(line) for line in nspawn.host_public_keys(s)]
            ssh.pin(self.known_hosts, ssh.known_hosts_name(s.ip), keys)

    def _refuse_foreign(self) -> None:
        """A lab of this name that another state directory (or a killed run) left on the
        host would share its bridge, addresses and node names: refuse, and say how to clear it."""
        bridge = f"pvl-{self.name}"[:15]
        running = nspawn.machines_running(self.name)
        what = (
            f"node {sorted(running)[0]} is running (pid {running[sorted(running)[0]]})"
            if running
            else f"bridge {bridge} exists"
            if services.bridge_exists(bridge)
            else f"{self.root} exists"
            if self.root.exists()
            else ""
        )
        if what:
            raise LabError(
                f"--name: a lab named {self.name} is already on this host ({what}) and not in this state "
                f"directory; run `sudo provisioner lab down --name {self.name}` to remove it, or choose another --name"
            )

    def write_cluster_file(self, st: LabState, files_repo: str) -> None:
        spec = {
            "name": self.name,
            # the host's disk is the nodes' disk: lower eviction thresholds (host.LAB_EVICTION_HARD)
            "kubernetes": {"proxy_mode": "iptables", "eviction_hard": dict(LAB_EVICTION_HARD)},
            "network": {
                "pod_subnet": "10.233.64.0/18",
                "service_subnet": "10.233.0.0/18",
                "node_prefix": 24,
                # two subnets: the host routes between them and knows no pod route, so pod traffic
                # to the other subnet goes through VXLAN; within a subnet it is routed directly
                "encapsulation": "vxlan" if st.second_subnet else "none",
                **({"encapsulation_mode": "cross-subnet"} if st.second_subnet else {}),
                "nat_outgoing": True,
                "route_reflectors": [],
            },
            "artifacts": {"files_repo": files_repo},
            # The lab host drops CAP_SYS_RESOURCE; containerd must not ask for it (docs/lab.md).
            "runtime": {"restrict_oom_score_adj": True},
            # The kernel tunables the kubelet checks (vm.overcommit_memory, kernel.panic, ...) are
            # the host kernel's: a machine container cannot set them. lab-node-prep (nspawn.py)
            # gives each node private copies, filled with the host's values at every boot and not
            # ordered after systemd-sysctl, so the node's /etc/sysctl.d may or may not reach them.
            # A kubelet with protectKernelDefaults only compares, and refuses to start ("invalid
            # kernel flag") while a copy holds the host's value; without it, the kubelet writes
            # its values into the copies itself.
            "hardening": {"protect_kernel_defaults": False},
            "ssh": {"user": "root", "private_key": str(self.key)},
            "nodes": [{"name": n.name, "address": n.ip, "roles": n.roles} for n in st.nodes],
        }
        if sum("control-plane" in n.roles for n in st.nodes) > 1:
            # An HA lab: clients reach the API through a VIP on the bridge that keepalived moves to
            # a healthy control plane (the admin kubeconfig points at it).
            vip = {"address": pick_vip(st.subnet, {n.ip for n in st.nodes})}
            spec = {**{k: v for k, v in spec.items() if k != "nodes"}, "api_vip": vip, "nodes": spec["nodes"]}
        header = f"# Cluster file for the local lab `{self.name}`, written by `provisioner lab up`.\n"
        self.cluster_file.write_text(header + yaml.safe_dump(spec, sort_keys=False))

    def _find(self, name: str) -> tuple[LabState, LabNode]:
        st = self.state()
        if st is None:
            raise LabError(f"there is no lab named {self.name}; run `provisioner lab up` first")
        for n in st.nodes:
            if n.name == name:
                return st, n
        raise LabError(f"lab {self.name} has no node {name}; it has {', '.join(n.name for n in st.nodes)}")

    def stop_node(self, name: str) -> None:
        require_host()
        st, node = self._find(name)
        nspawn.stop(self._node_spec(st, node, self._proxy_url(st), ""), self.dir)

    def start_node(self, name: str) -> None:
        require_host()
        st, node = self._find(name)
        spec = self._node_spec(st, node, self._proxy_url(st), "")
        if nspawn.pid_of(spec, self.dir) is None:
            nspawn.boot(spec, self.dir)
        # a node that ran a cluster boots its services too (etcd, the API server, the kubelet,
        # keepalived...): on a busy 2-core host its sshd answered after more than 60 s
        try:
            running = lambda: nspawn.pid_of(spec, self.dir) is not None  # noqa: E731
            nspawn.wait_ssh(spec.ip, timeout=START_SSH_TIMEOUT, running=running)
        except LabError as e:
            raise LabError(f"{name}: {e}\n{nspawn.boot_report(spec, self.dir)}") from None

    def status(self) -> list[dict[str, str]]:
        st = self.state()
        if st is None:
            return []
        rows = []
        for n in st.nodes:
            spec = self._node_spec(st, n, "", "")
            pid = nspawn.pid_of(spec, self.dir)
            rows.append(
                {
                    "node": n.name,
                    "address": n.ip,
                    "roles": ",".join(n.roles),
                    "state": "running" if pid else "stopped",
                    "pid": str(pid or "-"),
                }
            )
        return rows

    def down(self, say: Say = print) -> None:
        require_host()
        st = self.state()
        if st is not None:
            specs = [self._node_spec(st, n, "", "") for n in st.nodes]
            with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
                list(pool.map(lambda s: nspawn.stop(s, self.dir), specs))
            say(f"nodes: {len(specs)} stopped")
            for s in specs:  # their keys go with their root filesystems
                ssh.forget(self.known_hosts, ssh.known_hosts_name(s.ip))
        services.mirror_down(self.dir)
        services.apt_proxy_down(self.dir)
        # Whatever of a lab with this name is left on the host by another state directory
        # or a killed run goes too: nodes, pods, host services, bridge, root filesystems.
        bridge = st.bridge if st else f"pvl-{self.name}"[:15]
        stale = nspawn.kill_stale(self.name)
        stale_services = services.kill_stale(self.name, services.bridge_address(bridge))
        if stale or stale_services:
            say(f"stale: {len(stale)} node(s), {stale_services} host service(s) of an earlier lab {self.name} killed")
        services.bridge_down(bridge)
        services.bridge_down(second_bridge(self.name))
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.cluster_file.unlink(missing_ok=True)
