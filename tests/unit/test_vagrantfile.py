"""Unit tests of the Vagrantfile: its machines are the cluster file's nodes, its provider
blocks (VirtualBox, libvirt) set memory and CPUs, and `vagrant validate --ignore-provider`
accepts it. No provider needs to be installed (Debian's vagrant ships none) and no VM is
started."""

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


needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (Debian's vagrant package brings it)")


def recorded(sample: Path, **env: str) -> dict:
    out = subprocess.run(
        ["ruby", str(Path(__file__).with_name("vagrant_machines.rb")), str(ROOT / "Vagrantfile")],
        env={**os.environ, "CLUSTER_FILE": str(sample), **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@needs_ruby
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_machines_are_the_cluster_files_nodes(sample: Path) -> None:
    machines = recorded(sample)["machines"]
    nodes = spec.load(sample).nodes
    assert machines == [{"name": n.name, "hostname": n.name, "address": n.address} for n in nodes]


@needs_ruby
def test_provider_blocks_set_memory_and_cpus() -> None:
    """Both provider blocks are well formed and follow VM_MEMORY / VM_CPUS, without the
    provider installed (vagrant validate --ignore-provider does not look inside them)."""
    providers = recorded(SAMPLES[0], VM_MEMORY="3072", VM_CPUS="3")["providers"]
    assert providers == {"virtualbox": {"memory": 3072, "cpus": 3}, "libvirt": {"memory": 3072, "cpus": 3}}
    assert recorded(SAMPLES[0])["providers"]["libvirt"] == {"memory": 2048, "cpus": 2}


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="needs vagrant (sudo make host-packages)")
def test_vagrant_validate() -> None:
    """Debian's vagrant has no provider; --ignore-provider validates the file itself."""
    proc = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "validated successfully" in proc.stdout, proc.stdout + proc.stderr
