"""Unit tests of the version table (provisioner.versions) against what the mirror builds:
every Kubernetes, etcd and CoreDNS version in the table is the one required by the Go
module under mirror/go that builds it (and go.sum has it); containerd's version, pinned
only in its module, is the one the README states; the table's own invariants hold."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from provisioner import versions
from provisioner.mirror.build import module_requirement
from provisioner.versions import RELEASES, Release

ROOT = Path(__file__).resolve().parents[2]
GO = ROOT / "provisioner" / "mirror" / "go"


def required(module_dir: Path, path: str) -> str:
    """The version go.mod requires of ``path`` (parsed here, independently of the build code)."""
    found = set()
    in_require = False
    for raw in (module_dir / "go.mod").read_text().splitlines():
        line = raw.split("//", 1)[0].strip()
        if line.startswith("require ("):
            in_require = True
            continue
        if in_require and line == ")":
            in_require = False
            continue
        words = line.removeprefix("require ").split() if in_require or line.startswith("require ") else []
        if len(words) == 2 and words[0] == path:
            found.add(words[1])
    assert len(found) == 1, f"{module_dir.name}/go.mod requires {path} {found or 'not at all'}"
    [version] = found
    assert module_requirement(module_dir, path) == version, "the mirror build reads the same version"
    assert f"{path} {version} h1:" in (module_dir / "go.sum").read_text(), f"{module_dir.name}/go.sum lacks it"
    return version


def _minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


@pytest.mark.parametrize("rel", RELEASES, ids=lambda r: r.kubernetes)
def test_kubernetes_matches_its_go_module(rel: Release) -> None:
    module = GO / f"kubernetes-{_minor(rel.kubernetes)}"
    assert required(module, "k8s.io/kubernetes") == rel.kubernetes
    # the staging modules are replaced with their published twins of the same release
    twin = "v0." + rel.kubernetes.split(".", 1)[1]
    replaced = dict(re.findall(r"^\s*(k8s\.io/\S+) => k8s\.io/\S+ (v\S+)\s*$", (module / "go.mod").read_text(), re.M))
    assert replaced, "no staging replacements found"
    assert {m: v for m, v in replaced.items() if v != twin} == {}, f"every staging module at {twin}"


def test_every_kubernetes_module_is_a_supported_minor() -> None:
    """The mirror builds exactly the table: no module for a dropped minor, none missing."""
    modules = {p.name.removeprefix("kubernetes-") for p in GO.glob("kubernetes-*")}
    assert modules == {_minor(r.kubernetes) for r in RELEASES}


@pytest.mark.parametrize("rel", RELEASES, ids=lambda r: r.kubernetes)
def test_etcd_matches_its_go_module(rel: Release) -> None:
    for tool in ("server", "etcdctl", "etcdutl"):
        assert required(GO / "etcd", f"go.etcd.io/etcd/{tool}/v3") == rel.etcd, tool


@pytest.mark.parametrize("rel", RELEASES, ids=lambda r: r.kubernetes)
def test_coredns_matches_its_go_module(rel: Release) -> None:
    assert required(GO / "coredns", "github.com/coredns/coredns") == rel.coredns


def test_the_addons_match_their_go_modules() -> None:
    """The image tags the inventory uses are the versions the mirror builds."""
    assert required(GO / "metrics-server", "sigs.k8s.io/metrics-server") == versions.METRICS_SERVER
    assert required(GO / "local-path", "github.com/rancher/local-path-provisioner") == versions.LOCAL_PATH_PROVISIONER


def _supported_versions_paragraph() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Supported versions")
    return " ".join(readme[start : readme.index("\n\n", start)].split())


def test_containerd_is_pinned_by_its_module_and_the_readme_agrees() -> None:
    version = required(GO / "containerd", "github.com/containerd/containerd/v2")
    assert re.fullmatch(r"v2\.\d+\.\d+", version), version  # 2.x: Kubernetes 1.36+ needs it
    assert f"containerd {version}" in _supported_versions_paragraph()


def test_the_readme_states_the_table() -> None:
    text = _supported_versions_paragraph()
    for r in RELEASES:
        assert r.kubernetes in text and f"etcd {r.etcd}" in text and f"CoreDNS {r.coredns}" in text, text


def test_every_release_uses_the_pause_image_the_mirror_builds() -> None:
    """The mirror builds one pause image, the newest release's (see mirror/build.py)."""
    assert {r.pause for r in RELEASES} == {RELEASES[-1].pause}


def test_the_table_is_newest_last_one_minor_apart() -> None:
    minors = [versions.minor(r.kubernetes) for r in RELEASES]
    assert minors == sorted(minors)
    for (major_a, minor_a), (major_b, minor_b) in itertools.pairwise(minors):
        assert (major_b, minor_b) == (major_a, minor_a + 1), "upgrades go one minor at a time"
    assert versions.DEFAULT_KUBERNETES == RELEASES[-1].kubernetes
    assert versions.SUPPORTED_KUBERNETES == tuple(r.kubernetes for r in RELEASES)
    for r in RELEASES:
        assert re.fullmatch(r"v\d+\.\d+\.\d+", r.kubernetes) and re.fullmatch(r"v\d+\.\d+\.\d+", r.etcd)


def test_release_lookup() -> None:
    assert versions.release(RELEASES[0].kubernetes) is RELEASES[0]
    with pytest.raises(KeyError):
        versions.release("v1.20.0")
    assert versions.minor("v1.37.2") == (1, 37) and versions.minor("1.36.0") == (1, 36)
