"""End-to-end fixtures: a lab, the mirror served to it, and a cluster made by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.lab.manager import DEFAULT_MIRROR, Lab
from provisioner.mirror.manifest import Manifest
from provisioner.versions import DEFAULT_KUBERNETES

PROVISIONER = [sys.executable, "-m", "provisioner.cli"]
ROOT = Path(__file__).resolve().parents[2]


def provisioner(
    *args: str, check: bool = True, timeout: float = 900, cli: list[str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (``cli``: another install of it, e.g. the wheel's)."""
    proc = subprocess.run(
        [*(cli or PROVISIONER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"provisioner {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kubectl_binary() -> Path:
    manifest = Manifest.read(DEFAULT_MIRROR)
    if not manifest.artifacts:
        pytest.fail(f"no mirror at {DEFAULT_MIRROR}: run `provisioner mirror build` first (make test does)")
    return DEFAULT_MIRROR / manifest.find("kubectl", DEFAULT_KUBERNETES).path


@dataclass
class Cluster:
    lab: Lab
    file: Path
    state_dir: Path
    create: dict[str, Any]

    @property
    def kubeconfig(self) -> Path:
        return self.lab.cluster.kubeconfig

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            [str(kubectl_binary()), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply(self, manifest: str) -> None:
        proc = subprocess.run(
            [str(kubectl_binary()), "--kubeconfig", str(self.kubeconfig), "apply", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr

    def wait(self, what: str, predicate: Any, timeout: float = 180, interval: float = 3) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except AssertionError as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")

    def spec(self) -> dict[str, Any]:
        return yaml.safe_load(self.file.read_text())


def make_cluster(
    name: str,
    subnet: str,
    nodes: int,
    control_planes: int,
    tmp: Path,
    second_subnet: str | None = None,
    test_images: bool = False,
) -> Iterator[tuple[Lab, Path]]:
    """``second_subnet``: a two-subnet lab (the workers alternate between the bridges; the cluster
    file says encapsulation vxlan, cross-subnet). ``test_images``: the cluster file asks for the
    upstream e2e tests' image on every node (artifacts.test_images), for a lab that runs them."""
    kubectl_binary()
    lab = Lab(name, tmp)
    lab.down(say=lambda m: None)  # whatever an interrupted earlier run left
    lab.up(
        nodes=nodes,
        control_planes=control_planes,
        subnet=subnet,
        mirror_dir=DEFAULT_MIRROR,
        say=lambda m: None,
        second_subnet=second_subnet,
    )
    if test_images:
        spec = yaml.safe_load(lab.cluster_file.read_text())
        spec.setdefault("artifacts", {})["test_images"] = True
        lab.cluster_file.write_text(yaml.safe_dump(spec))
    try:
        yield lab, tmp
    finally:
        lab.down(say=lambda m: None)


def create(lab: Lab, state_dir: Path, cli: list[str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    proc = provisioner(
        "cluster",
        "create",
        "-f",
        str(lab.cluster_file),
        "--state-dir",
        str(state_dir),
        "--output",
        "json",
        check=False,
        cli=cli,
        cwd=cwd,
    )
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        data = {"ok": False}
    assert proc.returncode == 0 and data.get("ok"), f"create failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return data


def changed_tasks(result: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for run in result["results"]:
        for host, stats in run["stats"].items():
            totals[host] = totals.get(host, 0) + stats["changed"]
    return totals


def installed_wheel(tmp: Path) -> Path:
    """Build the wheel and install it, not editable, into a fresh venv outside the
    checkout; returns the venv (its bin/provisioner is the installed CLI)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp.glob("provisioner-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True, timeout=900
    )
    return venv


def cluster_scope(nodeid: str) -> str:
    """The tests that share one lab cluster: a package with its own cluster fixture (tests/e2e/ha)
    or else a module (its module-scoped cluster)."""
    module = nodeid.split("::", 1)[0]
    parts = module.split("/")
    if "e2e" in parts and len(parts) > parts.index("e2e") + 2:
        return "/".join(parts[: parts.index("e2e") + 2])
    return module


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs the e2e tests in two pytest-xdist workers (`-n 2`): each brings up its own
    lab clusters, which much of the time wait on boots, SSH round trips and Kubernetes' timers
    rather than on the 2 cores. Every test of one cluster goes to one worker, in file order, so
    that each cluster is created once. (xdist's own `--dist loadgroup` marks do not group with
    pytest 9.2, whose node ids xdist can no longer rewrite.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByCluster(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return cluster_scope(nodeid)

    return ByCluster(config, log)
