"""Unit tests of the day-2 playbooks' host patterns: from their one parameter (a
comma-separated node list) each play picks the right hosts. Real ansible-playbook
--list-hosts on a generated inventory; no host is contacted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner import ansible_config, inventory, spec
from provisioner.paths import PLAYBOOKS

SAMPLES = Path(__file__).resolve().parents[2] / "inventory" / "sample"


@pytest.fixture(scope="module")
def ha_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ha")
    s = spec.load(SAMPLES / "ha.yaml")
    inventory.write(inventory.build(s, inventory.assign_pod_blocks(s, {}), root), root / "inventory")
    ansible_config.write(root, len(s.nodes), mitogen=False)
    return root


def plays(root: Path, playbook: str, **extra: str) -> dict[str, list[str]]:
    """play name -> its hosts, sorted."""
    args = [str(Path(sys.executable).parent / "ansible-playbook"), "--list-hosts", str(PLAYBOOKS / playbook)]
    for k, v in extra.items():
        args += ["-e", f"{k}={v}"]
    out = subprocess.run(
        args,
        env={"ANSIBLE_CONFIG": str(root / "ansible.cfg"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, list[str]] = {}
    for block in re.split(r"\n\s*play #\d+ ", out)[1:]:
        name = re.match(r"\(.*?\): (.*?)\t", block).group(1)  # type: ignore[union-attr]
        hosts = re.findall(r"^\s{6}(\S+)$", block, re.M)
        result[name] = sorted(hosts)
    return result


def test_scale_picks_new_members_new_control_planes_and_the_rest(ha_inventory: Path) -> None:
    p = plays(ha_inventory, "scale.yml", scale_new_nodes="cp2,cp3,w2")
    assert p["Prepare the new nodes (OS, downloads, certificates)"] == ["cp2", "cp3", "w2"]
    assert p["New etcd members join, one at a time"] == ["cp2", "cp3"]
    assert p["Control plane on the new control planes"] == ["cp2", "cp3"]
    assert p["Existing control planes learn the new members, one at a time"] == ["cp1"]
    assert p["Existing nodes learn their new BGP peers (and new API servers)"] == ["cp1", "w1"]
    # the existing control plane knows its new VRRP peers as the new ones start keepalived
    assert p["API virtual IP on every control plane (new VRRP peers first known, then the new members start)"] == [
        "cp1",
        "cp2",
        "cp3",
    ]


def test_scale_of_one_worker(ha_inventory: Path) -> None:
    p = plays(ha_inventory, "scale.yml", scale_new_nodes="w2")
    assert p["New etcd members join, one at a time"] == []
    assert p["Kubelet and kube-proxy on the new nodes"] == ["w2"]
    assert p["Existing nodes learn their new BGP peers (and new API servers)"] == ["cp1", "cp2", "cp3", "w1"]


def test_remove_node_runs_on_the_nodes_that_stay(ha_inventory: Path) -> None:
    p = plays(ha_inventory, "remove-node.yml", removed_nodes="cp3,w1")
    assert p["Etcd quorum check (nothing changes yet)"] == ["cp1", "cp2"]
    assert p["Clean the removed nodes"] == ["cp3", "w1"]
    assert p["The other nodes drop their BGP peers (and the removed API servers)"] == ["cp1", "cp2", "w2"]
    assert p["The remaining control planes drop the removed etcd members, one at a time"] == ["cp1", "cp2"]
    assert p["The remaining control planes drop the removed ones from their VRRP peers (API VIP)"] == ["cp1", "cp2"]
