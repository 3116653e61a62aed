"""Unit tests of the mirror build's progress (provisioner.mirror.build): a component whose stamp
is fresh is reported "cached" and nothing runs; a real build is shown (binary by binary) while
it runs and the component counts as "built"; the progress lines for logs come every so often
with the elapsed time; on a terminal a live line shows the elapsed time.

No Go toolchain is used: a fake ``go`` on PATH answers ``go version`` and "builds" a binary by
writing a small file, and logs every call; the Go modules are small go.mod files in tmp."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from provisioner import defaults, spec
from provisioner.cli import app
from provisioner.mirror import build
from provisioner.mirror.manifest import Manifest

FAKE_GO = """#!/bin/sh
echo "$*" >> "$FAKE_GO_LOG"
if [ "$1" = version ]; then echo "go version go1.99.0 linux/amd64"; exit 0; fi
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then shift; printf 'fake binary\\n' > "$1"; fi
  shift
done
exit 0
"""


MINIMAL = {
    "name": "t",
    "nodes": [{"name": "cp1", "address": "192.0.2.11", "roles": ["etcd", "control-plane", "worker"]}],
}


class Log:
    def __init__(self, path: Path):
        self.path = path

    def builds(self) -> list[str]:
        text = self.path.read_text() if self.path.exists() else ""
        return [line for line in text.splitlines() if line.startswith("build ")]


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Log:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    log = tmp_path / "go.log"
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    modules = tmp_path / "modules"
    for name, requires in (("pause", ""), ("coredns", "require github.com/coredns/coredns v1.14.7\n")):
        (modules / name).mkdir(parents=True)
        (modules / name / "go.mod").write_text(f"module provisioner.local/mirror/{name}\n\ngo 1.26.0\n\n{requires}")
    monkeypatch.setattr(build, "GO_MODULES", modules)
    return Log(log)


class Recorder:
    """say() and live() of a Builder, written down."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.live_texts: list[str] = []

    def say(self, message: str) -> None:
        self.lines.append(message)

    def live(self, what: str) -> AbstractContextManager[build.Status]:
        self.live_texts.append(what)
        return build.every_so_often(self.say, what, every=3600)


def builder(tmp_path: Path, rec: Recorder) -> build.Builder:
    return build.Builder(mirror=tmp_path / "mirror", cache=tmp_path / "cache", say=rec.say, live=rec.live)


def test_a_fresh_stamp_is_cached_and_nothing_is_built(tmp_path: Path, fake_go: Log) -> None:
    rec = Recorder()
    b = builder(tmp_path, rec)
    b._timed("image-coredns", b.coredns_image)
    assert b.outcomes["image-coredns"] == "built"
    assert rec.live_texts == ["coredns v1.14.7: building coredns"]
    assert rec.lines[0] == "coredns v1.14.7: building coredns ..."
    assert re.fullmatch(r"coredns v1\.14\.7: building coredns: done in \d+s", rec.lines[-1])
    assert len(fake_go.builds()) == 1 and "cached" not in " ".join(rec.lines)

    rec2 = Recorder()
    again = builder(tmp_path, rec2)
    arts = again._timed("image-coredns", again.coredns_image)
    assert again.outcomes["image-coredns"] == "cached"
    assert rec2.lines == ["coredns v1.14.7: cached"] and rec2.live_texts == []
    assert len(fake_go.builds()) == 1, "no go build the second time"
    assert [a.name for a in arts] == ["image-coredns"], "the image is still packed from the cached binary"


def test_a_changed_input_builds_again(tmp_path: Path, fake_go: Log) -> None:
    rec = Recorder()
    out = tmp_path / "out"
    b = builder(tmp_path, rec)
    assert b.go_build("pause", {"pause": "."}, out, what="pause 3.10") is True
    assert b.go_build("pause", {"pause": "."}, out, what="pause 3.10") is False
    assert rec.lines[-1] == "pause 3.10: cached"
    with (build.GO_MODULES / "pause" / "go.mod").open("a") as f:
        f.write("// changed\n")
    assert b.go_build("pause", {"pause": "."}, out, what="pause 3.10") is True
    assert b.go_build("pause", {"pause": "."}, out, ldflags="-s", what="pause 3.10") is True
    (out / "pause").unlink()
    assert b.go_build("pause", {"pause": "."}, out, ldflags="-s", what="pause 3.10") is True, "a lost binary"
    assert len(fake_go.builds()) == 4


def test_a_failed_build_says_no_done(tmp_path: Path, fake_go: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    (Path(os.environ["PATH"].split(os.pathsep)[0]) / "go").write_text(
        '#!/bin/sh\nif [ "$1" = version ]; then echo go1.99; exit 0; fi\necho "cannot compile" >&2; exit 1\n'
    )
    rec = Recorder()
    with pytest.raises(build.MirrorBuildError, match="cannot compile"):
        builder(tmp_path, rec).go_build("pause", {"pause": "."}, tmp_path / "out", what="pause 3.10")
    assert not any("done" in line for line in rec.lines)


def test_lines_every_so_often_carry_the_elapsed_time_and_the_current_step() -> None:
    lines: list[str] = []
    with build.every_so_often(lines.append, "kubernetes v1.37.2: building", every=0.05) as status:
        status("kubernetes v1.37.2: go build kubelet (4/6)")
        time.sleep(0.3)
    assert lines[0] == "kubernetes v1.37.2: building ..."
    ticks = lines[1:-1]
    assert len(ticks) >= 2, lines
    assert all(re.fullmatch(r"kubernetes v1\.37\.2: go build kubelet \(4/6\) \.\.\. \d+s", t) for t in ticks), ticks
    assert re.fullmatch(r"kubernetes v1\.37\.2: building: done in \d+s", lines[-1])


def test_without_a_terminal_the_console_gets_lines_and_with_one_a_live_elapsed_time() -> None:
    plain = io.StringIO()
    progress = build.ConsoleProgress(Console(file=plain, force_terminal=False, width=100), every=0.05)
    with progress.live("etcd v3.6.16: building etcd"):
        time.sleep(0.2)
    text = plain.getvalue()
    assert text.startswith("etcd v3.6.16: building etcd ...\n") and "\x1b" not in text
    assert text.count("...") >= 2 and text.rstrip().endswith("done in 0s")

    term = io.StringIO()
    progress = build.ConsoleProgress(Console(file=term, force_terminal=True, width=100))
    with progress.live("etcd v3.6.16: building etcd") as status:
        status("etcd v3.6.16: go build etcdctl (2/3)")
        time.sleep(0.7)
    drawn = term.getvalue()
    assert "etcd v3.6.16: go build etcdctl (2/3)" in drawn and "0:00:00" in drawn, drawn
    assert re.search(r"etcd v3\.6\.16: building etcd: done in \ds\s*$", drawn), drawn


def test_mirror_build_prints_cached_and_the_timing_table(
    tmp_path: Path, fake_go: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command wires the progress: only the coredns image step, twice (the rest needs apt)."""

    def only_coredns(self: build.Builder, kubernetes: list[str]) -> Manifest:
        self.cache = tmp_path / "cache"  # never the real cache
        manifest = Manifest()
        manifest.replace(self._timed("image-coredns", self.coredns_image))
        return manifest

    monkeypatch.setattr(build.Builder, "build", only_coredns)
    args = ["mirror", "build", "--dir", str(tmp_path / "mirror"), "--kubernetes", "v1.37.2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "coredns v1.14.7: building coredns ..." in first.stderr
    assert re.search(r"image-coredns\s+\d+\.\ds  built", first.stderr)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "coredns v1.14.7: cached" in second.stderr and "building" not in second.stderr
    assert re.search(r"image-coredns\s+\d+\.\ds  cached", second.stderr)
    assert len(fake_go.builds()) == 1


# -- the add-on images (issue 11) ------------------------------------------------------------


@pytest.fixture
def addon_modules(fake_go: Log) -> Log:
    for name, path, version in (
        ("metrics-server", "sigs.k8s.io/metrics-server", "v0.9.0"),
        ("local-path", "github.com/rancher/local-path-provisioner", "v0.0.30"),
    ):
        (build.GO_MODULES / name).mkdir(parents=True)
        (build.GO_MODULES / name / "go.mod").write_text(
            f"module provisioner.local/mirror/{name}\n\ngo 1.26.0\n\ntool {path}\n\nrequire {path} {version}\n"
        )
    return fake_go


def _image_files(tarball: Path) -> tuple[dict[str, Any], dict[str, tarfile.TarInfo]]:
    """The image config and the layer's members of an OCI tarball written by oci.py."""
    with tarfile.open(tarball) as outer:
        blobs = {m.name: outer.extractfile(m).read() for m in outer.getmembers() if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs["blobs/" + index["manifests"][0]["digest"].replace(":", "/")])
    config = json.loads(blobs["blobs/" + manifest["config"]["digest"].replace(":", "/")])
    layer = blobs["blobs/" + manifest["layers"][0]["digest"].replace(":", "/")]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        members = {m.name: m for m in inner.getmembers()}
    return {"index": index, **config}, members


@pytest.mark.parametrize(
    ("step", "module", "package", "image", "entrypoint", "binary"),
    [
        (
            "metrics_server_image",
            "metrics-server",
            "sigs.k8s.io/metrics-server/cmd/metrics-server",
            f"{defaults.METRICS_SERVER_IMAGE}:v0.9.0",
            ["/metrics-server"],
            "metrics-server",
        ),
        (
            "local_path_image",
            "local-path",
            "github.com/rancher/local-path-provisioner",
            f"{defaults.LOCAL_PATH_IMAGE}:v0.0.30",
            [],
            "usr/bin/local-path-provisioner",
        ),
    ],
)
def test_an_addon_is_built_from_its_module_and_packed_under_the_name_the_inventory_uses(
    tmp_path: Path,
    addon_modules: Log,
    step: str,
    module: str,
    package: str,
    image: str,
    entrypoint: list[str],
    binary: str,
) -> None:
    rec = Recorder()
    b = builder(tmp_path, rec)
    [art] = b._timed(step, getattr(b, step))
    assert b.outcomes[step] == "built"
    [call] = addon_modules.builds()
    assert call.endswith(f" {package}") and "-trimpath" in call, call
    assert art.kind == "image" and art.image == image and art.version == image.rsplit(":", 1)[1]
    assert image in set(defaults.addons_vars(spec.from_dict(MINIMAL)).values()), "the inventory names this image"
    config, members = _image_files(tmp_path / "mirror" / art.path)
    assert config["index"]["manifests"][0]["annotations"]["io.containerd.image.name"] == image
    assert config["config"]["Entrypoint"] == entrypoint or config["config"]["Cmd"] == ["local-path-provisioner"]
    assert members[binary].mode == 0o755 and members["tmp"].mode == 0o1777
    # the go build ran in the add-on's own module, with CGO off
    assert b.go_env()["CGO_ENABLED"] == "0"

    rec2 = Recorder()
    again = builder(tmp_path, rec2)
    again._timed(step, getattr(again, step))
    assert again.outcomes[step] == "cached" and len(addon_modules.builds()) == 1, "unchanged: not built again"


def test_the_build_has_a_step_for_each_addon(
    tmp_path: Path, addon_modules: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builder.build runs the add-on steps and records their images in the manifest (the other
    steps, which need apt and real Go, are left out here)."""
    for other in (
        "kubernetes",
        "etcd",
        "containerd",
        "runc",
        "cni_plugins",
        "pause_image",
        "coredns_image",
        "test_image",
        "kube_router",
    ):
        if hasattr(build.Builder, other):
            monkeypatch.setattr(build.Builder, other, lambda self, *a: [])
    b = builder(tmp_path, Recorder())
    manifest = b.build([])
    assert {a.name for a in manifest.artifacts} == {"image-metrics-server", "image-local-path"}
    assert b.outcomes["image-metrics-server"] == b.outcomes["image-local-path"] == "built"
    assert Manifest.read(tmp_path / "mirror").find("image-local-path", "v0.0.30").image.endswith(":v0.0.30")
