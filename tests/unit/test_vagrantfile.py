"""Unit tests of the Vagrantfile: its machines are the cluster file's nodes, and
`vagrant validate` accepts it (Debian's vagrant package; no VM is started)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner import spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "inventory" / "sample").glob("*.yaml"))


@pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (Debian's vagrant package brings it)")
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_machines_are_the_cluster_files_nodes(sample: Path) -> None:
    out = subprocess.run(
        ["ruby", str(Path(__file__).with_name("vagrant_machines.rb")), str(ROOT / "Vagrantfile")],
        env={**os.environ, "CLUSTER_FILE": str(sample)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    machines = json.loads(out)
    nodes = spec.load(sample).nodes
    assert machines == [{"name": n.name, "hostname": n.name, "address": n.address} for n in nodes]


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="needs vagrant (sudo make host-packages)")
def test_vagrant_validate() -> None:
    proc = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "validated successfully" in proc.stdout, proc.stdout + proc.stderr
