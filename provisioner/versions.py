"""The one table of what this release of provisioner supports.

Each supported Kubernetes version names the component versions that go with it. The
offline mirror builds exactly these (its Go modules under ``provisioner/mirror/go`` pin the same
versions, and a unit test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    kubernetes: str
    etcd: str
    coredns: str
    pause: str


# Newest last. Upgrades go one minor at a time, so consecutive entries must be
# consecutive minors.
RELEASES: tuple[Release, ...] = (
    Release(kubernetes="v1.36.3", etcd="v3.6.16", coredns="v1.14.7", pause="3.10"),
    Release(kubernetes="v1.37.2", etcd="v3.6.16", coredns="v1.14.7", pause="3.10"),
)

# The add-ons: one version each, whatever the Kubernetes release (their Go modules under
# provisioner/mirror/go pin the same versions, and a unit test keeps the two in step).
METRICS_SERVER = "v0.9.0"
LOCAL_PATH_PROVISIONER = "v0.0.30"

# kube-router, whose network policy controller enforces NetworkPolicy (network.policy); its Go
# module under provisioner/mirror/go/kube-router pins the same version (a unit test checks).
KUBE_ROUTER = "v2.1.0"

SUPPORTED_KUBERNETES: tuple[str, ...] = tuple(r.kubernetes for r in RELEASES)
DEFAULT_KUBERNETES = RELEASES[-1].kubernetes


def release(version: str) -> Release:
    for r in RELEASES:
        if r.kubernetes == version:
            return r
    raise KeyError(version)


def minor(version: str) -> tuple[int, int]:
    """``v1.37.2`` -> ``(1, 37)``."""
    major, minor_, *_ = version.lstrip("v").split(".")
    return int(major), int(minor_)
