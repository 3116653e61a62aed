"""Host-side services of a lab: the bridge, the apt proxy and the artifact server.

Each is started in the background with its PID recorded in the lab directory, and each
has a matching teardown, so that `lab down` leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from provisioner.lab.host import CACHE_ROOT, LabError, mirror_url, processes, run

APT_PROXY_PORT = 3142
MIRROR_PORT = 8088


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
MIN_INOTIFY_INSTANCES = 1024


def raise_inotify_limit() -> None:
    """Nodes share the host's per-user inotify limit (128 by default); every node's systemd,
    containerd and kubelet take several instances. Raise it (never lower it); it is left
    raised after `lab down`, as it is harmless and other labs may still run."""
    try:
        if int(INOTIFY_INSTANCES.read_text()) < MIN_INOTIFY_INSTANCES:
            INOTIFY_INSTANCES.write_text(str(MIN_INOTIFY_INSTANCES))
    except OSError as exc:
        raise LabError(f"cannot raise fs.inotify.max_user_instances: {exc}") from None


def bridge_up(name: str, subnet: ipaddress.IPv4Network) -> str:
    """Create the bridge with the host's address (.1); return that address."""
    host_ip = f"{subnet[1]}/{subnet.prefixlen}"
    if run(["ip", "link", "show", name], check=False).returncode != 0:
        run(["ip", "link", "add", name, "type", "bridge"])
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", name]).stdout
    if host_ip not in addrs:
        run(["ip", "addr", "add", host_ip, "dev", name])
    run(["ip", "link", "set", name, "up"])
    return str(subnet[1])


def forwarding_on(bridge: str) -> None:
    """Route between the bridges of a two-subnet lab: IPv4 forwarding on for packets that come in
    on this bridge only (the host's other interfaces, and net.ipv4.ip_forward, are left alone)."""
    path = Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding")
    try:
        if path.read_text().strip() != "1":
            path.write_text("1")
    except OSError as exc:
        raise LabError(f"cannot turn on forwarding on {bridge}: {exc}") from None


def subnet_user(subnet: ipaddress.IPv4Network, bridge: str) -> str | None:
    """Another interface of the host with an address in ``subnet`` (another lab's bridge,
    or a real network): the lab would answer for, or shadow, its addresses."""
    out = run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if "inet" not in fields or fields[1] == bridge:
            continue
        iface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
        if iface.network.overlaps(subnet):
            return f"{fields[1]} ({iface})"
    return None


def bridge_down(name: str) -> None:
    if run(["ip", "link", "show", name], check=False).returncode == 0:
        run(["ip", "link", "delete", name])


def bridge_exists(name: str) -> bool:
    return run(["ip", "link", "show", name], check=False).returncode == 0


def bridge_address(name: str) -> str | None:
    """The host's IPv4 address on the bridge, if the bridge exists."""
    out = run(["ip", "-o", "-4", "addr", "show", "dev", name], check=False)
    fields = out.stdout.split() if out.returncode == 0 else []
    return fields[fields.index("inet") + 1].split("/")[0] if "inet" in fields else None


def kill_stale(lab: str, host_ip: str | None) -> int:
    """Kill this lab's apt proxy and artifact server left by another state directory or a
    killed run (found by their command lines); return how many were killed."""
    killed = 0
    for pid, argv in processes():
        proxy = argv[0].endswith(b"apt-cacher-ng") and any(a.endswith(f"/{lab}/lab/apt-proxy".encode()) for a in argv)
        server = (
            b"provisioner.mirror.serve" in argv and host_ip is not None and f"{host_ip}:{MIRROR_PORT}".encode() in argv
        )
        if proxy or server:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _alive(pidfile: Path, needle: str) -> int | None:
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if needle.encode() in cmdline else None


def _start(cmd: list[str], pidfile: Path, logfile: Path, needle: str) -> int:
    pid = _alive(pidfile, needle)
    if pid:
        return pid
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def _stop(pidfile: Path, needle: str) -> None:
    pid = _alive(pidfile, needle)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(pidfile, needle):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def _wait_port(address: str, port: int, what: str, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise LabError(f"{what} did not start listening on {address}:{port}")


def apt_proxy_up(state: Path, address: str) -> str:
    """apt-cacher-ng on the bridge address, forwarding to the host's Debian mirror."""
    conf = state / "apt-proxy"
    (conf / "log").mkdir(parents=True, exist_ok=True)
    cache = CACHE_ROOT / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    (conf / "backends_debian").write_text(mirror_url() + "\n")
    (conf / "acng.conf").write_text(
        f"CacheDir: {cache}\nLogDir: {conf / 'log'}\nSupportDir: /usr/lib/apt-cacher-ng\n"
        f"Port: {APT_PROXY_PORT}\nBindAddress: {address}\n"
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n"
        "ReportPage: acng-report.html\nExThreshold: 4\nForeGround: 1\n"
    )
    _start(["apt-cacher-ng", "-c", str(conf)], state / "apt-proxy.pid", state / "apt-proxy.log", "apt-cacher-ng")
    _wait_port(address, APT_PROXY_PORT, "the apt proxy (apt-cacher-ng)")
    return f"http://{address}:{APT_PROXY_PORT}"


def apt_proxy_down(state: Path) -> None:
    _stop(state / "apt-proxy.pid", "apt-cacher-ng")


def mirror_up(state: Path, address: str, directory: Path) -> str | None:
    """Serve the artifact mirror on the bridge, if one has been built."""
    if not (directory / "manifest.json").exists():
        return None
    cmd = [
        sys.executable,
        "-m",
        "provisioner.mirror.serve",
        "--address",
        f"{address}:{MIRROR_PORT}",
        "--dir",
        str(directory),
    ]
    _start(cmd, state / "mirror.pid", state / "mirror.log", "provisioner.mirror.serve")
    _wait_port(address, MIRROR_PORT, "the artifact mirror")
    return f"http://{address}:{MIRROR_PORT}"


def mirror_down(state: Path) -> None:
    _stop(state / "mirror.pid", "provisioner.mirror.serve")


def services_alive(state: Path) -> dict[str, bool]:
    return {
        "apt-proxy": _alive(state / "apt-proxy.pid", "apt-cacher-ng") is not None,
        "mirror": _alive(state / "mirror.pid", "provisioner.mirror.serve") is not None,
    }
