"""One lab node: a systemd-nspawn machine container with its own systemd, sshd, network
namespace and root filesystem, on the lab bridge.

The root filesystem is a full copy of the base image (``cp -a --reflink=auto``): a
reflink where the filesystem has them, a plain copy (1-5 s) elsewhere. An overlay would
be faster to make, but containerd's overlayfs snapshotter cannot stack on an overlayfs
root, and the nodes must run containerd.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner.lab.host import LabError, processes, run

# Only the machine-container needs these; a VM has them by nature (see docs/lab.md).
NODE_PREP_UNIT = """\
[Unit]
Description=Lab: writable cgroup controllers and private copies of host-global sysctls
DefaultDependencies=no
Before=sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-node-prep

[Install]
WantedBy=sysinit.target
"""

NODE_PREP_SCRIPT = """\
#!/bin/sh
# The lab runs nodes as machine containers. Their cgroup controllers are mounted
# read-only and some sysctls are global to the host kernel: remount the first writable
# and give the node private files for the second, so that the kubelet may write them
# without touching the host.
for c in /sys/fs/cgroup/*/; do
  c=${c%/}
  case "$(stat -fc %T "$c")" in cgroupfs) mount -o remount,bind,rw "$c" || true ;; esac
done
mkdir -p /run/lab-sysctl
for s in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \\
         kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  [ -e /proc/sys/$s ] || continue
  f=/run/lab-sysctl/$(echo $s | tr / .)
  cat /proc/sys/$s > "$f"
  mount --bind "$f" /proc/sys/$s || true
done
"""

SYSTEM_CONF = "[Manager]\nDefaultTimeoutStopSec=15s\n"


def _machine_container_files(r: Path) -> None:
    """What makes a machine container behave like a VM for Kubernetes (docs/lab.md)."""
    (r / "etc/systemd/system.conf.d").mkdir(parents=True, exist_ok=True)
    (r / "etc/systemd/system.conf.d/10-lab-stop.conf").write_text(SYSTEM_CONF)
    script = r / "usr/local/sbin/lab-node-prep"
    script.write_text(NODE_PREP_SCRIPT)
    script.chmod(0o755)
    units = r / "etc/systemd/system"
    (units / "lab-node-prep.service").write_text(NODE_PREP_UNIT)
    for link, target in (
        (units / "sysinit.target.wants/lab-node-prep.service", "/etc/systemd/system/lab-node-prep.service"),
        (units / "multi-user.target.wants/systemd-networkd.service", "/lib/systemd/system/systemd-networkd.service"),
    ):
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)


NSPAWN_ENV = {
    "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "0",
    "SYSTEMD_NSPAWN_USE_CGNS": "1",
    "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
}
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class NodeSpec:
    lab: str
    name: str
    address: str  # with prefix, e.g. 192.168.250.11/24
    gateway: str
    bridge: str
    proxy: str  # apt proxy URL
    rootfs: Path
    public_key: str
    # (destination, gateway): the lab's other subnets, routed by the host (a two-subnet lab)
    routes: tuple[tuple[str, str], ...] = ()

    @property
    def machine(self) -> str:
        return f"{self.lab}-{self.name}"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


def make_rootfs(node: NodeSpec, base: Path) -> None:
    """Copy the base image and write the node's identity (hostname, address, keys, proxy).

    A root filesystem kept from a stopped node is reused; only its authorized key is
    rewritten, so that the lab's current key always logs in."""
    if node.rootfs.exists():
        _authorize(node.rootfs, node.public_key)
        return
    tmp = node.rootfs.with_name(node.rootfs.name + ".partial")
    run(["rm", "-rf", str(tmp)])
    tmp.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", str(base), str(tmp)])
    r = tmp
    (r / ".complete").unlink(missing_ok=True)
    _machine_container_files(r)
    (r / "etc/hostname").write_text(node.name + "\n")
    (r / "etc/hosts").write_text(f"127.0.0.1 localhost\n{node.ip} {node.name}\n")
    (r / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    (r / "etc/systemd/network/10-host0.network").write_text(
        "[Match]\nName=host0\n\n[Network]\n"
        f"Address={node.address}\nGateway={node.gateway}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        + "".join(f"\n[Route]\nDestination={dst}\nGateway={gw}\n" for dst, gw in node.routes)
    )
    (r / "etc/apt/apt.conf.d/01proxy").write_text(f'Acquire::http::Proxy "{node.proxy}";\n')
    _authorize(r, node.public_key)
    # The node's own host key, and no other: none may come from the base image.
    for old in (r / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    key = Ed25519PrivateKey.generate()
    host_key = r / "etc/ssh/ssh_host_ed25519_key"
    host_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    os.chmod(host_key, 0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (r / "etc/ssh/ssh_host_ed25519_key.pub").write_bytes(pub + f" root@{node.name}\n".encode())
    tmp.rename(node.rootfs)


def host_public_keys(node: NodeSpec) -> list[str]:
    """The node's sshd host public keys (``ssh-ed25519 AAAA... root@cp1``), from its root filesystem."""
    return [p.read_text().strip() for p in sorted((node.rootfs / "etc/ssh").glob("ssh_host_*_key.pub"))]


def _authorize(rootfs: Path, public_key: str) -> None:
    ssh = rootfs / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key.strip() + "\n")
    os.chmod(ssh / "authorized_keys", 0o600)


def _controllers() -> list[Path]:
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and (p / "cgroup.procs").exists()]


def _own_cgroup(controller: str) -> str:
    """The cgroup path this process is in for a v1 controller (e.g. memory:/a/b)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def lab_cgroups(lab: str) -> list[Path]:
    """The lab's cgroup in every v1 controller, below the one this process is in."""
    out = []
    for ctrl in _controllers() if CGROUP_ROOT.exists() else ():
        name = ctrl.name.replace("name=", "")
        base = ctrl / _own_cgroup(name if name != "systemd" else "name=systemd").lstrip("/")
        out.append(base / "provisioner-lab" / lab)
    return out


def node_cgroups(node: NodeSpec) -> list[Path]:
    """Per-node cgroups in every v1 controller, so that kubelets do not share /kubepods."""
    return [p / node.name for p in lab_cgroups(node.lab)]


def _prepare_cgroups(node: NodeSpec) -> list[Path]:
    paths = node_cgroups(node)
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if (path / "cpuset.cpus").exists():
            # cpuset children start empty: copy each level down from its parent.
            levels = [p for p in (path, *path.parents) if len(p.parts) > len(CGROUP_ROOT.parts) + 1]
            for level in reversed(levels):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (level / f).read_text().strip():
                        (level / f).write_text((level.parent / f).read_text())
    return paths


def _kill_members(paths: list[Path]) -> int:
    """SIGKILL every process in these cgroup trees (a node's pods, a stale lab's nodes); return
    how many there were."""
    found = 0
    for procs in (f for path in paths if path.exists() for f in path.rglob("cgroup.procs")):
        try:
            members = procs.read_text().split()
        except OSError:  # ENOENT/ENODEV: the cgroup went away (its last process exited) meanwhile
            continue
        for p in members:
            try:
                if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # exited already; only its parent's wait() is left
                os.kill(int(p), signal.SIGKILL)
                found += 1
            except (ProcessLookupError, FileNotFoundError):
                pass
    return found


def _remove_trees(paths: list[Path], parents: int) -> None:
    """Remove these cgroup trees (deepest first), then up to ``parents`` levels above them
    where they are left empty."""
    for path in paths:
        if not path.exists():
            continue
        subs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for sub in [*subs, path, *list(path.parents)[:parents]]:
            try:
                sub.rmdir()
            except OSError:
                pass


def _remove_cgroups(node: NodeSpec) -> None:
    """Remove the node's cgroups (deepest first), then the lab's and our parent if empty."""
    _remove_trees(node_cgroups(node), parents=2)


def boot(node: NodeSpec, state_dir: Path) -> int:
    """Start the node in the background; return the nspawn PID."""
    paths = _prepare_cgroups(node)
    if (Path("/sys/class/net") / host_veth(node)).exists():  # left by a node that died uncleanly
        run(["ip", "link", "delete", host_veth(node)], check=False)
    console = state_dir / f"{node.name}.console.log"
    procs = " ".join(str(p / "cgroup.procs") for p in paths)
    cmd = [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "-D",
        str(node.rootfs),
        "-M",
        node.machine,
        "--boot",
        f"--network-bridge={node.bridge}",
        "--capability=all",
        "--private-users=no",
        "--bind=/dev/kmsg",
        "--system-call-filter=@keyring",
        "--console=read-only",
    ]
    # Join the node's cgroups first, then become nspawn: its container inherits them.
    script = f'for f in {procs}; do echo $$ > "$f"; done; exec "$@"'
    with open(console, "ab") as log:
        proc = subprocess.Popen(
            ["sh", "-c", script, "lab-node", *cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **NSPAWN_ENV},
            start_new_session=True,
        )
    (state_dir / f"{node.name}.pid").write_text(str(proc.pid))
    return proc.pid


def boot_report(node: NodeSpec, state_dir: Path, lines: int = 40) -> str:
    """Whether the node's nspawn still runs, and the end of its console log: what a failed
    boot leaves to read."""
    pid = pid_of(node, state_dir)
    console = state_dir / f"{node.name}.console.log"
    tail = console.read_text(errors="replace").splitlines()[-lines:] if console.exists() else []
    state = f"systemd-nspawn runs (pid {pid})" if pid else "systemd-nspawn is not running"
    return "\n".join([f"{state}; the last {len(tail)} lines of {console}:", *tail])


def pid_of(node: NodeSpec, state_dir: Path) -> int | None:
    pidfile = state_dir / f"{node.name}.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().strip() or 0)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"systemd-nspawn" in cmdline and node.machine.encode() in cmdline else None


def stop(node: NodeSpec, state_dir: Path, timeout: float = 30.0) -> None:
    """Orderly shutdown (nspawn turns SIGTERM into a poweroff of the node), then SIGKILL."""
    pid = pid_of(node, state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_of(node, state_dir) is not None:
            time.sleep(0.2)
        if pid_of(node, state_dir) is not None:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(pid)
    # Processes left in the node's cgroups (pods) go with it. A killed process may take a while
    # to exit (pages to write back, mounts to drop); while one lives, the node's network
    # namespace and so its host-side veth live too, and a new boot of the node would fail
    # ("File exists"). Wait for both, up to ``timeout``.
    deadline = time.monotonic() + timeout
    while True:
        alive = _kill_members(node_cgroups(node))
        veth = Path("/sys/class/net") / host_veth(node)
        if not alive and not veth.exists():
            break
        if time.monotonic() > deadline:
            if veth.exists():  # its namespace outlived the node: take the link away ourselves
                run(["ip", "link", "delete", veth.name], check=False)
            break
        time.sleep(0.2)
    _remove_cgroups(node)
    (state_dir / f"{node.name}.pid").unlink(missing_ok=True)


def host_veth(node: NodeSpec) -> str:
    """The host side of the node's --network-bridge link: systemd-nspawn names it "vb-" and
    the machine name, cut to the kernel's 15 characters."""
    return f"vb-{node.machine}"[:15]


def machines_running(lab: str) -> dict[str, int]:
    """Every systemd-nspawn on this host whose machine name is ``<lab>-...``, whoever
    started it (another state directory, a killed run): machine -> pid."""
    found = {}
    for pid, argv in processes():
        if not argv[0].endswith(b"systemd-nspawn"):
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == b"-M" and value.startswith(f"{lab}-".encode()):
                found[value.decode()] = pid
    return found


def kill_stale(lab: str) -> list[str]:
    """Kill nodes of ``lab`` that this state directory does not know, and their pods;
    remove the lab's cgroups. Returns the machines killed."""
    running = machines_running(lab)
    for pid in running.values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5 if running else 0)
    existing = [p for p in lab_cgroups(lab) if p.exists()]
    _kill_members(existing)
    time.sleep(0.2 if existing else 0)
    _remove_trees(existing, parents=1)
    return sorted(running)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_ssh(address: str, port: int = 22, timeout: float = 60.0, running: Callable[[], bool] | None = None) -> float:
    """Wait until sshd answers with its banner; return the seconds waited. ``running``: whether
    the node still runs; once it does not, waiting longer is pointless."""
    import socket

    started = time.monotonic()
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - started
        except OSError:
            pass
        if running is not None and not running():
            raise LabError(f"{address}: the node stopped while booting, after {time.monotonic() - started:.0f}s")
        if time.monotonic() - started > timeout:
            raise LabError(f"{address}: sshd did not answer within {timeout:.0f}s; see the node's console log")
        time.sleep(0.3)
