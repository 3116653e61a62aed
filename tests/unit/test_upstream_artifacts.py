"""The upstream test artifacts of the mirror: the agnhost tag read from the e2e framework's
image manifest, the ELF reading that collects curl's and nc's libraries, the download list
(agnhost when the mirror has it), and the e2e.test build step (go test -c)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner import artifacts
from provisioner.mirror import build
from provisioner.versions import RELEASES
from tests.unit.test_mirror import _full_manifest

REL = RELEASES[-1]

MANIFEST_GO = """
	configs[AgnhostPrev] = Config{list.PromoterE2eRegistry, "agnhost", "2.55"}
	configs[Agnhost] = Config{list.PromoterE2eRegistry, "agnhost", "2.66.1"}
	configs[AgnhostPrivate] = Config{list.PrivateRegistry, "agnhost", "2.6"}
"""


def test_the_agnhost_tag_is_the_one_the_e2e_framework_asks_for(tmp_path: Path) -> None:
    (tmp_path / "test/utils/image").mkdir(parents=True)
    (tmp_path / "test/utils/image/manifest.go").write_text(MANIFEST_GO)
    assert build.agnhost_tag(tmp_path) == "2.66.1"
    (tmp_path / "test/utils/image/manifest.go").write_text("package image\n")
    with pytest.raises(build.MirrorBuildError, match="no agnhost image"):
        build.agnhost_tag(tmp_path)


def test_elf_needed_agrees_with_readelf() -> None:
    binary = Path(shutil.which("ls") or "/bin/ls").resolve()
    ours = build.elf_needed(binary.read_bytes())
    assert "libc.so.6" in ours
    if shutil.which("readelf"):
        out = subprocess.run(["readelf", "-d", str(binary)], capture_output=True, text=True, check=True).stdout
        theirs = [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
        assert ours == theirs
    with pytest.raises(build.MirrorBuildError, match="not a 64-bit"):
        build.elf_needed(b"#!/bin/sh\n")


def test_symbolic_links_are_followed_inside_the_package(tmp_path: Path) -> None:
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libz.so.1.2.13").write_bytes(b"z")
    (lib / "libz.so.1").symlink_to("libz.so.1.2.13")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64/ld.so").symlink_to("/usr/lib/x86_64-linux-gnu/libz.so.1")  # absolute: inside the package
    assert build.resolve_in(tmp_path, tmp_path / "lib64/ld.so") == lib / "libz.so.1.2.13"


def test_agnhost_goes_to_every_node_only_when_the_cluster_file_asks() -> None:
    with_it = _full_manifest(REL)
    names = [d["name"] for d in artifacts.downloads(with_it, REL, "http://m")["k8s_cluster"]]
    assert "image-agnhost" not in names, "a test image: by default no node carries it"
    names = [d["name"] for d in artifacts.downloads(with_it, REL, "http://m", test_images=True)["k8s_cluster"]]
    assert "image-agnhost" in names
    without = _full_manifest(REL, skip="image-agnhost")
    names = [d["name"] for d in artifacts.downloads(without, REL, "http://m")["k8s_cluster"]]
    assert "image-agnhost" not in names, "a mirror without it still serves clusters that do not ask"
    with pytest.raises(artifacts.ArtifactError, match=r"^artifacts\.test_images: the mirror has no image-agnhost"):
        artifacts.downloads(without, REL, "http://m", test_images=True)


def test_e2e_test_is_built_with_go_test_c_in_the_releases_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        if cmd[:2] == ["go", "version"]:
            return subprocess.CompletedProcess(cmd, 0, "go version go1.26.8 linux/amd64\n", "")
        calls.append([*cmd, str(kw.get("cwd"))])
        out = Path(cmd[cmd.index("-o") + 1])
        out.write_bytes(b"\x7fELF e2e")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(build.subprocess, "run", fake_run)
    b = build.Builder(mirror=tmp_path / "mirror", cache=tmp_path / "cache", say=lambda m: None)
    [art] = b.e2e_test(REL.kubernetes)
    [cmd] = calls
    assert cmd[:3] == ["go", "test", "-c"] and cmd[-2] == "k8s.io/kubernetes/test/e2e"
    assert cmd[-1].endswith(f"kubernetes-1.{REL.kubernetes.split('.')[1]}")
    assert f"-X k8s.io/component-base/version.gitVersion={REL.kubernetes}" in cmd[cmd.index("-ldflags") + 1]
    assert (art.name, art.version, art.component, art.kind) == ("e2e.test", REL.kubernetes, "kubernetes-test", "binary")
    assert os.path.exists(tmp_path / "mirror" / art.path)
    b.e2e_test(REL.kubernetes)
    assert len(calls) == 1, "unchanged inputs: cached"
