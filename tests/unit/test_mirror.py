"""Unit tests of the mirror's data (provisioner.mirror, provisioner.artifacts): manifest
round trip, sha256 verification (a corrupted, resized or missing file is caught and
named), the OCI image layout (index, manifest and blob digests that match their bytes),
and the per-group download lists built from a manifest and a Release."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner import artifacts
from provisioner.cli import app
from provisioner.mirror import oci
from provisioner.mirror.manifest import Artifact, Manifest, VerifyError, describe, sha256_file, verify
from provisioner.spec import Addons
from provisioner.versions import LOCAL_PATH_PROVISIONER, METRICS_SERVER, Release, release

REL = Release(kubernetes="v1.37.2", etcd="v3.6.16", coredns="v1.14.7", pause="3.10")


def _mirror(tmp_path: Path) -> tuple[Path, Manifest]:
    root = tmp_path / "mirror"
    files = {
        ("kubelet", "v1.37.2", "kubernetes"): b"kubelet binary",
        ("etcd", "v3.6.16", "etcd"): b"etcd binary",
    }
    entries = []
    for (name, version, component), data in files.items():
        path = root / component / version / "linux" / "amd64" / name
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        entries.append(describe(root, path, name=name, version=version, component=component))
    m = Manifest(entries, {"built_by": "a test"})
    m.write(root)
    return root, m


def test_manifest_round_trip(tmp_path: Path) -> None:
    root, m = _mirror(tmp_path)
    again = Manifest.read(root)
    assert again == m
    kubelet = again.find("kubelet", "v1.37.2")
    assert kubelet.path == "kubernetes/v1.37.2/linux/amd64/kubelet"
    assert kubelet.sha256 == hashlib.sha256(b"kubelet binary").hexdigest() and kubelet.size == len(b"kubelet binary")
    assert kubelet.location("http://10.0.0.1:8088/") == "http://10.0.0.1:8088/kubernetes/v1.37.2/linux/amd64/kubelet"
    with pytest.raises(KeyError, match=r"kubelet v1\.36\.3"):
        again.find("kubelet", "v1.36.3")
    assert not (root / "manifest.tmp").exists(), "written through a temporary file, then renamed"


def test_a_manifest_of_another_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="manifest format 2 is not 1"):
        Manifest.from_json(json.dumps({"format": 2, "artifacts": []}))
    assert Manifest.read(tmp_path) == Manifest(), "no manifest.json reads as empty"


def test_replace_drops_entries_with_the_same_path_only() -> None:
    old = Artifact("runc", "1.1.5", "runc/1.1.5/runc", "a" * 64, 1, component="runc")
    other = Artifact("runc", "1.1.4", "runc/1.1.4/runc", "b" * 64, 1, component="runc")
    m = Manifest([old, other])
    new = Artifact("runc", "1.1.5", "runc/1.1.5/runc", "c" * 64, 2, component="runc")
    m.replace([new])
    assert m.artifacts == [other, new]


def test_versions_are_ordered_as_numbers() -> None:
    m = Manifest([Artifact("containerd", v, f"c/{v}", "0" * 64, 1) for v in ("v2.9.1", "v2.10.0", "v2.2.9")])
    assert m.versions("containerd") == ["v2.2.9", "v2.9.1", "v2.10.0"]


def test_verify_passes_on_a_good_mirror(tmp_path: Path) -> None:
    root, _ = _mirror(tmp_path)
    assert verify(root) == 2


def test_verify_names_the_corrupted_resized_and_missing_files(tmp_path: Path) -> None:
    root, m = _mirror(tmp_path)
    kubelet = root / "kubernetes/v1.37.2/linux/amd64/kubelet"
    kubelet.write_bytes(b"kubelet binarY")  # same size, other bytes
    (root / "etcd/v3.6.16/linux/amd64/etcd").unlink()
    with pytest.raises(VerifyError) as caught:
        verify(root)
    assert str(caught.value).splitlines() == [
        "kubernetes/v1.37.2/linux/amd64/kubelet: sha256 does not match the manifest (corrupted or replaced)",
        "etcd/v3.6.16/linux/amd64/etcd: missing",
    ]
    kubelet.write_bytes(b"kubelet")
    with pytest.raises(VerifyError, match=r"^kubernetes/v1.37.2/linux/amd64/kubelet: size 7, manifest says 14$"):
        verify(root, Manifest(m.artifacts[:1]))


def test_verify_without_a_manifest_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match=r"no manifest\.json, or it lists nothing; run `provisioner mirror build`"):
        verify(tmp_path)


def test_mirror_verify_command(tmp_path: Path) -> None:
    root, _ = _mirror(tmp_path)
    result = CliRunner().invoke(app, ["mirror", "verify", "--dir", str(root)])
    assert result.exit_code == 0 and f"mirror {root}: 2 artifacts verified" in " ".join(result.output.split())
    (root / "etcd/v3.6.16/linux/amd64/etcd").write_bytes(b"etcd binarY")
    result = CliRunner().invoke(app, ["mirror", "verify", "--dir", str(root)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: etcd/v3.6.16/linux/amd64/etcd: sha256 does not match the manifest (corrupted or replaced)"
    ]


# -- OCI ----------------------------------------------------------------------------------

IMAGE = oci.Image(
    "registry.local/hello:1.0",
    [
        oci.Entry("bin", directory=True),
        oci.Entry("bin/hello", data=b"#!/bin/sh\necho hi\n", mode=0o755),
        oci.Entry("bin/hi", link="hello"),
    ],
    ["/bin/hello"],
)


def _blob(files: dict[str, bytes], descriptor: dict[str, object]) -> bytes:
    algorithm, hexdigest = str(descriptor["digest"]).split(":")
    assert algorithm == "sha256"
    data = files[f"blobs/sha256/{hexdigest}"]
    assert hashlib.sha256(data).hexdigest() == hexdigest and len(data) == descriptor["size"], descriptor
    return data


def test_oci_tarball_layout_and_digests(tmp_path: Path) -> None:
    tarball = oci.write_tarball(IMAGE, tmp_path / "hello.oci.tar")
    with tarfile.open(tarball) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blobs = [p for p in files if p.startswith("blobs/sha256/")]
    assert len(blobs) == 3, "layer, config, manifest"
    for path in blobs:  # content-addressed: every blob's name is its sha256
        assert path.rsplit("/", 1)[1] == hashlib.sha256(files[path]).hexdigest(), path
    index = json.loads(files["index.json"])
    [entry] = index["manifests"]
    assert entry["mediaType"] == oci.MT_MANIFEST
    assert entry["annotations"] == {
        "io.containerd.image.name": "registry.local/hello:1.0",
        "org.opencontainers.image.ref.name": "1.0",
    }
    manifest = json.loads(_blob(files, entry))
    config = json.loads(_blob(files, manifest["config"]))
    assert manifest["config"]["mediaType"] == oci.MT_CONFIG
    assert config["config"]["Entrypoint"] == ["/bin/hello"] and config["os"] == "linux"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == oci.MT_LAYER
    layer_data = _blob(files, layer)
    assert config["rootfs"]["diff_ids"] == [layer["digest"]], "an uncompressed layer: diff_id = digest"
    with tarfile.open(fileobj=io.BytesIO(layer_data)) as lt:
        hello = lt.getmember("bin/hello")
        assert hello.mode == 0o755 and lt.extractfile(hello).read() == b"#!/bin/sh\necho hi\n"  # type: ignore[union-attr]
        assert lt.getmember("bin/hi").issym() and lt.getmember("bin/hi").linkname == "hello"
        assert lt.getmember("bin").isdir() and hello.mtime == 0 and hello.uid == 0


def test_oci_layout_is_reproducible(tmp_path: Path) -> None:
    a = oci.write_tarball(IMAGE, tmp_path / "a.oci.tar")
    b = oci.write_tarball(IMAGE, tmp_path / "b.oci.tar")
    assert sha256_file(a) == sha256_file(b)
    changed = oci.Image(IMAGE.name, [*IMAGE.entries[:1], oci.Entry("bin/hello", data=b"other", mode=0o755)], ["/x"])
    assert oci.build_layout(changed)["index.json"] != oci.build_layout(IMAGE)["index.json"]


# -- downloads ----------------------------------------------------------------------------


def _full_manifest(rel: Release, skip: str = "") -> Manifest:
    version_of = {
        "kubernetes": rel.kubernetes,
        "etcd": rel.etcd,
        "coredns": rel.coredns,
        "pause": rel.pause,
        "metrics-server": METRICS_SERVER,
        "local-path": LOCAL_PATH_PROVISIONER,
    }
    keys = {name: key for needs in artifacts.NEEDS.values() for name, key in needs}
    return Manifest(
        [
            Artifact(
                name=n,
                version=version_of.get(keys[n], "1.0"),
                path=f"{keys[n]}/{n}",
                sha256=hashlib.sha256(n.encode()).hexdigest(),
                size=1,
                component={"*": "misc"}.get(keys[n], keys[n]),
                kind="image" if n.startswith("image-") else "binary",
            )
            for n in sorted(keys)
            if n != skip
        ]
    )


def test_downloads_carry_url_and_sha256() -> None:
    m = _full_manifest(REL)
    out = artifacts.downloads(m, REL, "http://mirror:8088/", test_images=True)
    assert set(out) == set(artifacts.NEEDS)
    for group, needs in artifacts.NEEDS.items():
        assert [d["name"] for d in out[group]] == [name for name, _ in needs]
    flat = {d["name"]: d for items in out.values() for d in items}
    for a in m.artifacts:
        assert flat[a.name]["url"] == f"http://mirror:8088/{a.path}", "files_repo + path"
        assert flat[a.name]["sha256"] == a.sha256 == hashlib.sha256(a.name.encode()).hexdigest()
    assert flat["kube-apiserver"]["version"] == "v1.37.2" and flat["etcd"]["version"] == "v3.6.16"
    assert flat["kube-apiserver"]["link"] == "/usr/local/bin/kube-apiserver"
    assert flat["image-pause"]["link"] is None


def test_downloads_follow_the_release() -> None:
    older = Release(kubernetes="v1.36.3", etcd=REL.etcd, coredns=REL.coredns, pause=REL.pause)
    m = _full_manifest(REL)
    m.artifacts += [replace(a, version="v1.36.3", path=f"old/{a.name}") for a in m.artifacts if a.version == "v1.37.2"]
    flat = {d["name"]: d for items in artifacts.downloads(m, older, "http://m").values() for d in items}
    assert flat["kubelet"]["version"] == "v1.36.3" and flat["kubelet"]["url"] == "http://m/old/kubelet"


def test_unpinned_components_take_the_newest_version() -> None:
    m = _full_manifest(REL)
    base = m.find("containerd")
    for v in ("v2.10.0", "v2.9.1"):
        m.artifacts.append(replace(base, version=v, path=f"containerd/{v}/containerd"))
    flat = {d["name"]: d for items in artifacts.downloads(m, REL, "http://m").values() for d in items}
    assert flat["containerd"]["version"] == "v2.10.0"
    assert flat["containerd"]["url"] == "http://m/containerd/v2.10.0/containerd"


@pytest.mark.parametrize(
    ("skip", "named"), [("etcdutl", "etcdutl v3.6.16"), ("runc", "runc"), ("kubelet", "kubelet v1.37.2")]
)
def test_a_missing_artifact_is_named(skip: str, named: str) -> None:
    with pytest.raises(artifacts.ArtifactError) as caught:
        artifacts.downloads(_full_manifest(REL, skip=skip), REL, "http://mirror")
    assert str(caught.value).startswith(f"the mirror has no {named}; run `provisioner mirror build`")


def test_a_version_the_mirror_lacks_is_named() -> None:
    with pytest.raises(artifacts.ArtifactError, match=r"the mirror has no kubelet v1\.36\.3"):
        artifacts.downloads(_full_manifest(REL), release("v1.36.3"), "http://mirror")


def test_addon_images_go_to_every_node_unless_turned_off() -> None:
    """metrics-server and local-path-provisioner: their images, at the pinned versions, on
    every Kubernetes node; an add-on the cluster file turns off is neither fetched nor needed
    in the mirror."""
    m = _full_manifest(REL)
    names = [d["name"] for d in artifacts.downloads(m, REL, "http://m")["k8s_cluster"]]
    assert {"image-metrics-server", "image-local-path", "image-busybox"} <= set(names)
    flat = {d["name"]: d for d in artifacts.downloads(m, REL, "http://m")["k8s_cluster"]}
    assert flat["image-metrics-server"]["version"] == METRICS_SERVER == "v0.9.0"
    assert flat["image-local-path"]["version"] == LOCAL_PATH_PROVISIONER == "v0.0.30"
    off = Addons.model_validate({"metrics_server": {"enabled": False}, "local_path": {"enabled": False}})
    without = artifacts.downloads(_full_manifest(REL, skip="image-metrics-server"), REL, "http://m", off)
    left = {d["name"] for items in without.values() for d in items}
    assert not left & {"image-metrics-server", "image-local-path"}, "off: not downloaded, not needed in the mirror"
    assert "image-busybox" in left and "image-coredns" in left
    with pytest.raises(artifacts.ArtifactError, match=r"the mirror has no image-metrics-server v0\.9\.0"):
        artifacts.downloads(_full_manifest(REL, skip="image-metrics-server"), REL, "http://m")


def test_an_unreadable_files_repo_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(artifacts.ArtifactError, match=r"artifacts.files_repo: cannot read file://.*/manifest.json"):
        artifacts.fetch_manifest(f"file://{tmp_path}")
    root, m = _mirror(tmp_path)
    assert artifacts.fetch_manifest(f"file://{root}/") == m
