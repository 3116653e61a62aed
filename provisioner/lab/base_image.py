"""The lab's base root filesystem: Debian bookworm as a fresh cloud VM has it.

Built once with debootstrap into a cache outside the repo, keyed by a hash of what goes
in, so that a change to the recipe builds a new image and an unchanged one is reused.
It holds what a cloud VM ships (systemd, sshd, python3, sudo, iproute2, ca-certificates)
and none of what provisioner's roles install (no containerd, etcd, bird, nginx, ...).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from provisioner.lab.host import CACHE_ROOT, LabError, mirror_url, run

SUITE = "bookworm"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "python3",
    "python3-apt",
    "sudo",
    "ca-certificates",
    "curl",
    "procps",
    "kmod",
    "iputils-ping",
    "less",
)


def recipe_hash() -> str:
    h = hashlib.sha256()
    for part in (SUITE, " ".join(PACKAGES)):
        h.update(part.encode())
    return h.hexdigest()[:12]


def image_dir(cache: Path = CACHE_ROOT) -> Path:
    return cache / "images" / f"{SUITE}-{recipe_hash()}"


def _configure(root: Path) -> None:
    """Strip what must differ per node; per-node files are written when a node is made."""
    # Host keys are made per node; a shared key would make every node the same host.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    # apt lists are fetched by the roles through the proxy, as on a fresh VM.
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    # An old mtime, so that apt's cache_valid_time sees lists that were never fetched.
    os.utime(root / "var/lib/apt/lists", (0, 0))
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def ensure(cache: Path = CACHE_ROOT, log: Path | None = None) -> tuple[Path, float]:
    """Return the base image directory, building it first if needed, and the seconds spent."""
    target = image_dir(cache)
    if (target / ".complete").exists():
        return target, 0.0
    started = time.monotonic()
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(work),
        mirror_url(),
    ]
    proc = run(cmd, check=False)
    if log:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise LabError(f"debootstrap of the base image failed: {' | '.join(tail)}")
    _configure(work)
    (work / ".complete").write_text(recipe_hash() + "\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target, time.monotonic() - started
