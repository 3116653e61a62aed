"""Facts about the lab host, and the commands the lab needs on it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from provisioner.errors import ProvisionerError

CACHE_ROOT = Path(os.environ.get("PROVISIONER_CACHE", "/var/cache/provisioner"))
LAB_ROOT = Path(os.environ.get("PROVISIONER_LAB_ROOT", "/var/lib/provisioner/lab"))

# executable -> the Debian package that has it
REQUIRED = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "ip": "iproute2",
}


# The lab's kubelets take the host's disk for their own (nodefs, imagefs). At the kubelet's default
# thresholds (10 % and 15 % free) a host disk filled by other things, such as Go caches, taints
# every lab node with disk-pressure and evicts its pods. The lab's cluster file therefore sets
# these thresholds, and `lab up` refuses on a host disk with less than LAB_MIN_FREE_PCT free.
LAB_EVICTION_HARD = {
    "memory.available": "100Mi",
    "nodefs.available": "5%",
    "nodefs.inodesFree": "5%",
    "imagefs.available": "5%",
    "imagefs.inodesFree": "5%",
}
LAB_MIN_FREE_PCT = 10  # twice the thresholds above: room for the images and logs of the nodes


class LabError(ProvisionerError):
    """Something on the lab host is missing or wrong; the message says what to do."""


def require_host() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates a bridge and machine containers); run it with sudo")
    missing = sorted({pkg for exe, pkg in REQUIRED.items() if shutil.which(exe) is None})
    if missing:
        raise LabError(f"missing host packages; install them with: apt-get install -y {' '.join(missing)}")


def require_disk(path: Path) -> None:
    """Refuse when the disk that holds the lab's nodes is nearly full (see LAB_EVICTION_HARD)."""
    where = next(p for p in (path, *path.parents) if p.exists())
    fs = os.statvfs(where)
    free_pct = 100.0 * fs.f_bavail / fs.f_blocks if fs.f_blocks else 100.0
    if free_pct < LAB_MIN_FREE_PCT:
        need = (LAB_MIN_FREE_PCT / 100.0 * fs.f_blocks - fs.f_bavail) * fs.f_frsize / 2**30
        raise LabError(
            f"{path}: its disk has {fs.f_bavail * fs.f_frsize / 2**30:.0f} GiB free ({free_pct:.1f} %); the lab's "
            f"kubelets share it and need {LAB_MIN_FREE_PCT} % free, or they taint their nodes with disk-pressure: "
            f"free at least {need:.0f} GiB first"
        )


def run(cmd: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a host command (never on a node); raise LabError with its stderr on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[:400]}")
    return proc


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses, so that the lab needs no mirror of its own."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file() or path.suffix not in (".list", ".sources", ""):
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            m = re.match(r"^URIs:\s*(\S+)", line) or re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
            if m and not m.group(1).rstrip("/").endswith("-security"):
                return m.group(1).rstrip("/") + "/"
    raise LabError("cannot find a Debian mirror in /etc/apt/sources.list*; set PROVISIONER_DEBIAN_MIRROR")


def mirror_url() -> str:
    return os.environ.get("PROVISIONER_DEBIAN_MIRROR") or debian_mirror()


def processes() -> list[tuple[int, list[bytes]]]:
    """Every process on this host with its command line (argv), for finding what a lab
    left behind; processes that end while being read are skipped."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0]:
            out.append((int(entry.name), argv))
    return out
