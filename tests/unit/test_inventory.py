"""Unit tests of the inventory: golden files for every sample, kubespray's group names,
stable pod blocks when nodes come and go, and `ansible-inventory --list` accepting it.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner import inventory, spec
from provisioner.state import ClusterDir

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "inventory" / "sample").glob("*.yaml"))
GOLDEN = Path(__file__).with_name("golden")


@pytest.fixture(autouse=True)
def fixed_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/operator")  # ssh.private_key: ~/... expands the same everywhere


def _written(sample: Path, out: Path) -> Path:
    s = spec.load(sample)
    blocks = inventory.assign_pod_blocks(s, {})
    return inventory.write(inventory.build(s, blocks, Path("/state") / s.name), out)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_golden(sample: Path, tmp_path: Path) -> None:
    out = _written(sample, tmp_path / "inv")
    for rel in ("hosts.yaml", "group_vars/all.yml"):
        golden = GOLDEN / sample.stem / rel
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text((out / rel).read_text())
        assert (out / rel).read_text() == golden.read_text(), f"{rel} of {sample.name} differs from {golden}"


def test_kubespray_groups_and_route_reflectors() -> None:
    s = spec.load(ROOT / "inventory" / "sample" / "large.yaml")
    inv = inventory.build(s, inventory.assign_pod_blocks(s, {}), Path("/state"))
    children = inv.hosts["all"]["children"]
    assert set(children) == {"etcd", "kube_control_plane", "kube_node", "calico_rr", "k8s_cluster"}
    assert set(children["k8s_cluster"]["children"]) == {"kube_control_plane", "kube_node", "calico_rr"}
    assert sorted(children["calico_rr"]["hosts"]) == sorted(s.network.route_reflectors)
    single = spec.load(ROOT / "inventory" / "sample" / "single-node.yaml")
    inv = inventory.build(single, inventory.assign_pod_blocks(single, {}), Path("/state"))
    assert "calico_rr" not in inv.hosts["all"]["children"]


def _spec(names: list[str]) -> spec.ClusterSpec:
    nodes = [{"name": "cp1", "address": "192.168.250.11", "roles": ["etcd", "control-plane"]}]
    nodes += [{"name": n, "address": f"192.168.250.{21 + i}", "roles": ["worker"]} for i, n in enumerate(names)]
    return spec.from_dict({"name": "blocks", "nodes": nodes})


def test_pod_blocks_are_stable_when_nodes_come_and_go(tmp_path: Path) -> None:
    cdir = ClusterDir.for_cluster("blocks", tmp_path).ensure()
    first = inventory.assign_pod_blocks(_spec(["w1", "w2", "w3"]), cdir.read_blocks())
    cdir.write_blocks(first)
    assert len(set(first.values())) == 4
    # a node added in the middle of the file does not renumber anyone
    grown = inventory.assign_pod_blocks(_spec(["w1", "w9", "w2", "w3"]), cdir.read_blocks())
    assert {k: grown[k] for k in first} == first
    assert grown["w9"] not in first.values()
    cdir.write_blocks(grown)
    # a removed node's neighbours keep theirs; its block is free again for the next one
    shrunk = inventory.assign_pod_blocks(_spec(["w1", "w9", "w3"]), cdir.read_blocks())
    assert {k: shrunk[k] for k in shrunk} == {k: grown[k] for k in shrunk}
    again = inventory.assign_pod_blocks(_spec(["w1", "w9", "w3", "w4"]), shrunk)
    assert again["w4"] == grown["w2"]
    # persisted in the cluster directory
    assert (cdir.blocks_file).exists() and cdir.read_blocks() == grown


def test_blocks_outside_the_subnet_or_shared_are_reassigned() -> None:
    s = _spec(["w1", "w2"])
    previous = {"cp1": "10.0.0.0/24", "w1": "10.233.65.0/24", "w2": "10.233.65.0/24"}
    blocks = inventory.assign_pod_blocks(s, previous)
    assert blocks["w1"] == "10.233.65.0/24"  # kept
    assert len(set(blocks.values())) == 3  # cp1 (outside) and w2 (shared) get free blocks
    assert all(b.startswith("10.233.") for b in blocks.values())


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_ansible_inventory_accepts_it(sample: Path, tmp_path: Path) -> None:
    out = _written(sample, tmp_path / "inv")
    exe = Path(sys.executable).with_name("ansible-inventory")
    proc = subprocess.run([str(exe), "-i", str(out), "--list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    s = spec.load(sample)
    assert sorted(data["kube_control_plane"]["hosts"]) == sorted(n.name for n in s.control_planes)
    assert sorted(data["etcd"]["hosts"]) == sorted(n.name for n in s.etcd_members)
    assert set(data["k8s_cluster"]["children"]) >= {"kube_control_plane", "kube_node"}
    first = s.nodes[0]
    assert data["_meta"]["hostvars"][first.name]["ip"] == first.address
    assert data["_meta"]["hostvars"][first.name]["kube_version"] == s.kubernetes.version
