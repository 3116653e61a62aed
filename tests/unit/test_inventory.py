"""Unit tests of the inventory (provisioner.inventory): golden files for every sample,
kubespray's group names, stable pod blocks when nodes come and go (persisted in the
cluster directory), and `ansible-inventory --list` accepting what is written.

After an intended change of the output, regenerate the golden files with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_inventory.py`` and review the diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from provisioner import inventory, spec
from provisioner.cli import app
from provisioner.state import ClusterDir

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "inventory" / "sample").glob("*.yaml"))
GOLDEN = Path(__file__).with_name("golden")
FILES = ("hosts.yaml", "group_vars/all.yml")
STATE = Path("/state")  # the cluster directory's parent as it appears in the golden files
HOME = "/home/operator"  # ssh.private_key ~/... expands to this in the golden files


@pytest.fixture(autouse=True)
def fixed_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", HOME)
    monkeypatch.chdir(tmp_path)  # a forgotten --state-dir lands in tmp, not in ./clusters


def check_golden(actual: str, golden: Path) -> None:
    """Compare with the golden file; with UPDATE_GOLDEN=1 (re)write it instead."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden} is missing; generate it with UPDATE_GOLDEN=1"
    assert actual == golden.read_text(), f"differs from {golden} (UPDATE_GOLDEN=1 rewrites it after a wanted change)"


def _written(sample: Path, out: Path) -> Path:
    s = spec.load(sample)
    blocks = inventory.assign_pod_blocks(s, {})
    return inventory.write(inventory.build(s, blocks, STATE / s.name), out)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_golden(sample: Path, tmp_path: Path) -> None:
    out = _written(sample, tmp_path / "inv")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(FILES)
    for rel in FILES:
        check_golden((out / rel).read_text(), GOLDEN / sample.stem / rel)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_the_cli_writes_the_same_inventory(sample: Path, tmp_path: Path) -> None:
    """`inventory generate -o` gives the golden files, once its state directory is named /state."""
    state = tmp_path / "state"
    result = CliRunner().invoke(
        app,
        [
            "inventory",
            "generate",
            "--no-downloads",
            "-f",
            str(sample),
            "-o",
            str(tmp_path / "inv"),
            "--state-dir",
            str(state),
        ],
    )
    assert result.exit_code == 0, result.output
    for rel in FILES:
        text = (tmp_path / "inv" / rel).read_text().replace(str(state), str(STATE))
        assert text == (GOLDEN / sample.stem / rel).read_text(), rel


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_kubespray_groups(sample: Path) -> None:
    s = spec.load(sample)
    inv = inventory.build(s, inventory.assign_pod_blocks(s, {}), STATE)
    children = inv.hosts["all"]["children"]
    names = lambda nodes: sorted(n.name for n in nodes)  # noqa: E731
    assert sorted(children["etcd"]["hosts"]) == names(s.etcd_members)
    assert sorted(children["kube_control_plane"]["hosts"]) == names(s.control_planes)
    assert sorted(children["kube_node"]["hosts"]) == names(s.workers)
    cluster_children = set(children["k8s_cluster"]["children"])
    if s.network.route_reflectors:
        assert sorted(children["calico_rr"]["hosts"]) == sorted(s.network.route_reflectors)
        assert cluster_children == {"kube_control_plane", "kube_node", "calico_rr"}
    else:
        assert "calico_rr" not in children
        assert cluster_children == {"kube_control_plane", "kube_node"}
    assert sorted(inv.hosts["all"]["hosts"]) == names(s.nodes)


def test_the_large_sample_has_route_reflectors() -> None:
    """So that test_kubespray_groups covers calico_rr."""
    assert spec.load(ROOT / "inventory" / "sample" / "large.yaml").network.route_reflectors


def test_host_vars_carry_labels_taints_and_overrides() -> None:
    data = spec.load(ROOT / "inventory" / "sample" / "ha.yaml").model_dump(mode="json")
    data["nodes"][3]["ssh_user"] = "admin"
    data["nodes"][3]["ssh_port"] = 2222
    s = spec.from_dict(data)
    hv = inventory.build(s, inventory.assign_pod_blocks(s, {}), STATE).hosts["all"]["hosts"]
    assert hv["w1"] == {
        "ansible_host": "192.168.250.21",
        "ip": "192.168.250.21",
        "pod_block": "10.233.67.0/24",
        "ansible_user": "admin",
        "ansible_port": 2222,
        "ansible_become": True,
        "node_labels": {"disk": "ssd"},
    }
    assert hv["w2"]["node_taints"] == ["dedicated=batch:NoSchedule"]
    assert "ansible_user" not in hv["cp1"] and "node_labels" not in hv["cp1"]
    assert "ansible_become" not in hv["cp1"], "root needs no sudo (and may not have it)"


def test_a_user_other_than_root_becomes_root_through_sudo() -> None:
    """Preflight refuses a non-root user without passwordless sudo; the one it lets through
    runs every task through sudo (and root is never asked for a sudo it may not have)."""
    data = spec.load(ROOT / "inventory" / "sample" / "ha.yaml").model_dump(mode="json")
    data["ssh"]["user"] = "deploy"
    data["nodes"][0]["ssh_user"] = "root"
    s = spec.from_dict(data)
    hv = inventory.build(s, inventory.assign_pod_blocks(s, {}), STATE).hosts["all"]["hosts"]
    assert "ansible_become" not in hv["cp1"]
    assert all(hv[n.name]["ansible_become"] is True for n in s.nodes[1:])


def _spec(workers: list[str]) -> spec.ClusterSpec:
    nodes = [{"name": "cp1", "address": "192.168.250.11", "roles": ["etcd", "control-plane"]}]
    nodes += [{"name": n, "address": f"192.168.250.{21 + i}", "roles": ["worker"]} for i, n in enumerate(workers)]
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
    assert cdir.read_blocks() == grown
    # a removed node's neighbours keep theirs; its block is free again for the next one
    shrunk = inventory.assign_pod_blocks(_spec(["w1", "w9", "w3"]), cdir.read_blocks())
    assert shrunk == {k: grown[k] for k in shrunk}
    again = inventory.assign_pod_blocks(_spec(["w1", "w9", "w3", "w4"]), shrunk)
    assert again["w4"] == grown["w2"]


def test_blocks_outside_the_subnet_or_shared_are_reassigned() -> None:
    s = _spec(["w1", "w2"])
    previous = {"cp1": "10.0.0.0/24", "w1": "10.233.65.0/24", "w2": "10.233.65.0/24"}
    blocks = inventory.assign_pod_blocks(s, previous)
    assert blocks["w1"] == "10.233.65.0/24"  # kept
    assert len(set(blocks.values())) == 3  # cp1 (outside) and w2 (shared) get free blocks
    assert all(b.startswith("10.233.") for b in blocks.values())


def _cluster_file(path: Path, workers: list[str]) -> Path:
    nodes = "".join(f"  - {{name: {n}, address: 192.168.250.{21 + int(n[1:])}, roles: [worker]}}\n" for n in workers)
    path.write_text(
        "name: blocks\nnodes:\n  - {name: cp1, address: 192.168.250.11, roles: [etcd, control-plane]}\n" + nodes
    )
    return path


def _blocks_in_inventory(state: Path) -> dict[str, str]:
    hosts = yaml.safe_load((state / "blocks" / "inventory" / "hosts.yaml").read_text())["all"]["hosts"]
    return {name: hv["pod_block"] for name, hv in hosts.items()}


def test_the_cli_persists_blocks_in_the_cluster_directory(tmp_path: Path) -> None:
    """`inventory generate` records pod-blocks.yaml; later runs keep every recorded block."""
    state, runner = tmp_path / "state", CliRunner()
    generate = [
        "inventory",
        "generate",
        "--no-downloads",
        "-f",
        str(tmp_path / "cluster.yaml"),
        "--state-dir",
        str(state),
    ]
    _cluster_file(tmp_path / "cluster.yaml", ["w1", "w2", "w3"])
    assert runner.invoke(app, generate).exit_code == 0
    first = _blocks_in_inventory(state)
    assert yaml.safe_load((state / "blocks" / "pod-blocks.yaml").read_text()) == first
    # a new node first in the file: plan marks only it new, and generate renumbers no one
    _cluster_file(tmp_path / "cluster.yaml", ["w0", "w1", "w2", "w3"])
    plan = runner.invoke(
        app, ["cluster", "plan", "-f", str(tmp_path / "cluster.yaml"), "--state-dir", str(state), "-o", "json"]
    )
    assert [n["name"] for n in json.loads(plan.stdout)["nodes"] if n["new_block"]] == ["w0"]
    assert runner.invoke(app, generate).exit_code == 0
    grown = _blocks_in_inventory(state)
    assert {k: grown[k] for k in first} == first and grown["w0"] not in first.values()
    # removing a node leaves the others alone
    _cluster_file(tmp_path / "cluster.yaml", ["w0", "w1", "w3"])
    assert runner.invoke(app, generate).exit_code == 0
    shrunk = _blocks_in_inventory(state)
    assert shrunk == {k: grown[k] for k in shrunk} and "w2" not in shrunk
    assert yaml.safe_load((state / "blocks" / "pod-blocks.yaml").read_text()) == shrunk


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_ansible_inventory_accepts_it(sample: Path, tmp_path: Path) -> None:
    out = _written(sample, tmp_path / "inv")
    exe = Path(sys.executable).with_name("ansible-inventory")
    proc = subprocess.run([str(exe), "-i", str(out), "--list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    s = spec.load(sample)
    hosts = lambda group: sorted(data.get(group, {}).get("hosts", []))  # noqa: E731
    assert hosts("kube_control_plane") == sorted(n.name for n in s.control_planes)
    assert hosts("etcd") == sorted(n.name for n in s.etcd_members)
    assert hosts("kube_node") == sorted(n.name for n in s.workers)
    assert hosts("calico_rr") == sorted(s.network.route_reflectors)
    assert set(data["k8s_cluster"]["children"]) >= {"kube_control_plane", "kube_node"}
    assert set(data["all"]["children"]) >= {"etcd", "k8s_cluster"}
    first = s.nodes[0]
    hostvars = data["_meta"]["hostvars"][first.name]
    assert hostvars["ip"] == first.address and hostvars["pod_block"].endswith(f"/{s.network.node_prefix}")
    assert hostvars["kube_version"] == s.kubernetes.version  # group_vars/all.yml was read too
    assert hostvars["ansible_user"] == s.ssh.user
