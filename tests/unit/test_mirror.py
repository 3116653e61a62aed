"""Unit tests of the mirror's data: manifest round trip, sha256 verification (a corrupted
or missing file is caught and named), the OCI layout (index.json, blobs, digests that
match their content), the per-group download lists, and the pinned versions agreeing
with the Go modules that build them."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from provisioner import artifacts
from provisioner.mirror import oci
from provisioner.mirror.build import module_requirement
from provisioner.mirror.manifest import Artifact, Manifest, VerifyError, describe, verify
from provisioner.versions import RELEASES, Release, release

ROOT = Path(__file__).resolve().parents[2]


def _mirror(tmp_path: Path) -> tuple[Path, Manifest]:
    root = tmp_path / "mirror"
    (root / "kubernetes/v1.37.2").mkdir(parents=True)
    (root / "etcd/v3.6.16").mkdir(parents=True)
    a = root / "kubernetes/v1.37.2/kubelet"
    a.write_bytes(b"kubelet binary")
    b = root / "etcd/v3.6.16/etcd"
    b.write_bytes(b"etcd binary")
    m = Manifest(
        [
            describe(root, a, name="kubelet", version="v1.37.2", component="kubernetes"),
            describe(root, b, name="etcd", version="v3.6.16", component="etcd"),
        ]
    )
    m.write(root)
    return root, m


def test_manifest_round_trip(tmp_path: Path) -> None:
    root, m = _mirror(tmp_path)
    again = Manifest.read(root)
    assert again.artifacts == m.artifacts
    assert again.find("kubelet", "v1.37.2").sha256 == hashlib.sha256(b"kubelet binary").hexdigest()
    assert again.find("kubelet", "v1.37.2").location("http://10.0.0.1:8088/") == (
        "http://10.0.0.1:8088/kubernetes/v1.37.2/kubelet"
    )


def test_verify_passes_then_names_the_corrupted_and_the_missing_file(tmp_path: Path) -> None:
    root, _ = _mirror(tmp_path)
    assert verify(root) == 2
    (root / "kubernetes/v1.37.2/kubelet").write_bytes(b"kubelet binarY")  # same size, other bytes
    (root / "etcd/v3.6.16/etcd").unlink()
    with pytest.raises(VerifyError) as caught:
        verify(root)
    lines = str(caught.value).splitlines()
    assert "kubernetes/v1.37.2/kubelet: sha256 does not match the manifest (corrupted or replaced)" in lines
    assert "etcd/v3.6.16/etcd: missing" in lines


def test_verify_without_a_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="run `provisioner mirror build`"):
        verify(tmp_path)


def test_oci_tarball_layout_and_digests(tmp_path: Path) -> None:
    image = oci.Image(
        "registry.local/hello:1.0",
        [oci.Entry("bin", directory=True), oci.Entry("bin/hello", data=b"#!/bin/sh\necho hi\n", mode=0o755)],
        ["/bin/hello"],
    )
    tarball = oci.write_tarball(image, tmp_path / "hello.oci.tar")
    with tarfile.open(tarball) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for path, data in files.items():
        if path.startswith("blobs/sha256/"):
            assert path.rsplit("/", 1)[1] == hashlib.sha256(data).hexdigest(), path
    index = json.loads(files["index.json"])
    [entry] = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "registry.local/hello:1.0"
    manifest_blob = files["blobs/sha256/" + entry["digest"].split(":")[1]]
    assert entry["size"] == len(manifest_blob)
    manifest = json.loads(manifest_blob)
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    [layer] = manifest["layers"]
    layer_data = files["blobs/sha256/" + layer["digest"].split(":")[1]]
    assert layer["size"] == len(layer_data)
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed layer
    with tarfile.open(fileobj=io.BytesIO(layer_data)) as lt:
        hello = lt.getmember("bin/hello")
        assert hello.mode == 0o755 and lt.extractfile(hello).read() == b"#!/bin/sh\necho hi\n"  # type: ignore[union-attr]
    # reproducible: the same image gives the same bytes
    again = oci.write_tarball(image, tmp_path / "again.oci.tar")
    assert again.read_bytes() == tarball.read_bytes()


def test_downloads_name_what_is_missing(tmp_path: Path) -> None:
    _, m = _mirror(tmp_path)
    with pytest.raises(artifacts.ArtifactError, match="the mirror has no "):
        artifacts.downloads(m, release("v1.37.2"), "http://mirror")


def test_downloads_carry_url_and_sha256() -> None:
    names = {name for needs in artifacts.NEEDS.values() for name, _ in needs}
    rel = release("v1.37.2")
    version_of = {"kubernetes": rel.kubernetes, "etcd": rel.etcd, "coredns": rel.coredns, "pause": rel.pause}
    keys = {name: key for needs in artifacts.NEEDS.values() for name, key in needs}
    m = Manifest(
        [
            Artifact(
                name=n,
                version=version_of.get(keys[n], "1.0"),
                path=f"x/{n}",
                sha256=hashlib.sha256(n.encode()).hexdigest(),
                size=1,
                component=keys[n],
            )
            for n in sorted(names)
        ]
    )
    out = artifacts.downloads(m, rel, "http://mirror:8088")
    assert set(out) == set(artifacts.NEEDS)
    flat = {d["name"]: d for items in out.values() for d in items}
    assert flat["kube-apiserver"]["url"] == "http://mirror:8088/x/kube-apiserver"
    assert flat["kube-apiserver"]["sha256"] == hashlib.sha256(b"kube-apiserver").hexdigest()
    assert flat["kube-apiserver"]["version"] == "v1.37.2"


@pytest.mark.parametrize("rel", RELEASES, ids=lambda r: r.kubernetes)
def test_pinned_versions_match_the_go_modules(rel: Release) -> None:
    minor = ".".join(rel.kubernetes.lstrip("v").split(".")[:2])
    assert module_requirement(ROOT / "mirror/go" / f"kubernetes-{minor}", "k8s.io/kubernetes") == rel.kubernetes
    assert module_requirement(ROOT / "mirror/go/etcd", "go.etcd.io/etcd/server/v3") == rel.etcd
    assert module_requirement(ROOT / "mirror/go/coredns", "github.com/coredns/coredns") == rel.coredns
