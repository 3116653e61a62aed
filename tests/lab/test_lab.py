"""The local lab for real: machine-container nodes, real SSH, the apt proxy, teardown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import testinfra

from provisioner import preflight, spec
from provisioner.lab import nspawn
from provisioner.lab.host import LabError
from provisioner.lab.manager import Lab

pytestmark = pytest.mark.lab
SUBNET = "192.168.251.0/24"
NAME = "labtest"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    lab = Lab(NAME, tmp_path_factory.mktemp("state"))
    lab.down(say=lambda m: None)  # whatever an interrupted earlier run left
    lab.up(nodes=3, control_planes=1, subnet=SUBNET, mirror_dir=Path("/nonexistent"), say=lambda m: None)
    yield lab
    lab.down(say=lambda m: None)


def _hosts(lab: Lab) -> list:
    return [
        testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={lab.key}&timeout=10")
        for row in lab.status()
    ]


def test_every_node_runs_and_preflight_passes(lab: Lab) -> None:
    rows = lab.status()
    assert [r["node"] for r in rows] == ["cp1", "w1", "w2"]
    assert all(r["state"] == "running" for r in rows)
    cluster = spec.load(lab.cluster_file)
    reports = preflight.run(cluster, cluster_dir=lab.cluster.root)
    failed = [c for r in reports for c in r.failures()]
    assert not failed, failed
    # lab up pinned every node's own host key: the first contact is already verified
    host_keys = {c.detail for r in reports for c in r.checks if c.name == "host key"}
    assert len(host_keys) == len(reports) and all(d.endswith("(matches the pinned key)") for d in host_keys)
    assert {r.cgroup_version for r in reports} <= {1, 2}


def test_nodes_look_like_fresh_vms(lab: Lab) -> None:
    for host, row in zip(_hosts(lab), lab.status(), strict=True):
        assert host.service("ssh").is_running
        assert host.check_output("hostname") == row["node"]
        assert f"{row['address']}/24" in host.check_output("ip -4 -o addr show dev host0")
        proxy = host.file("/etc/apt/apt.conf.d/01proxy")
        assert proxy.contains("Acquire::http::Proxy")
        assert "192.168.251.1:3142" in proxy.content_string
        # what the roles install is not there yet
        for absent in ("containerd", "kubelet", "etcd", "bird"):
            assert not host.exists(absent), f"{absent} already on a fresh node"


def test_apt_install_through_the_proxy(lab: Lab) -> None:
    host = _hosts(lab)[1]
    out = host.run("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello && hello")
    assert out.rc == 0, out.stderr[-500:]
    assert "Hello, world!" in out.stdout


def test_a_subnet_another_lab_uses_is_refused(lab: Lab, tmp_path: Path) -> None:
    other = Lab("labother", tmp_path)
    with pytest.raises(LabError, match=rf"--subnet: {SUBNET} is already used on this host by pvl-{NAME}"):
        other.up(nodes=1, control_planes=1, subnet=SUBNET, mirror_dir=Path("/nonexistent"), say=lambda m: None)
    assert nspawn.machines_running("labother") == {} and not other.state_file.exists()


def test_lab_up_again_keeps_running_nodes(lab: Lab) -> None:
    before = {r["node"]: r["pid"] for r in lab.status()}
    lab.up(nodes=3, control_planes=1, mirror_dir=Path("/nonexistent"), say=lambda m: None)
    after = {r["node"]: r["pid"] for r in lab.status()}
    assert before == after


def test_stop_and_start_one_node(lab: Lab) -> None:
    lab.stop_node("w2")
    states = {r["node"]: r["state"] for r in lab.status()}
    assert states == {"cp1": "running", "w1": "running", "w2": "stopped"}
    lab.start_node("w2")
    assert _hosts(lab)[2].check_output("hostname") == "w2"


def test_lab_down_leaves_nothing(tmp_path: Path) -> None:
    lab = Lab("labgone", tmp_path)
    lab.up(nodes=1, control_planes=1, subnet="192.168.252.0/24", mirror_dir=Path("/nonexistent"), say=lambda m: None)
    st = lab.state()
    assert st is not None
    node_cgroups = nspawn.node_cgroups(lab._node_spec(st, st.nodes[0], "", ""))
    lab.down(say=lambda m: None)
    assert subprocess.run(["ip", "link", "show", st.bridge], capture_output=True).returncode != 0
    procs = subprocess.run(["pgrep", "-af", "systemd-nspawn.*labgone"], capture_output=True, text=True).stdout
    assert procs == ""
    acng = subprocess.run(["pgrep", "-af", "apt-cacher-ng"], capture_output=True, text=True).stdout
    assert str(lab.dir) not in acng
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert st.bridge not in rules and "192.168.252." not in rules
    assert not lab.root.exists() and not lab.dir.exists()
    assert not any(p.exists() for p in node_cgroups)
    assert not any(p.parent.exists() for p in node_cgroups)


def test_a_lab_left_by_another_state_dir_is_refused_then_cleared(tmp_path: Path) -> None:
    first = Lab("labstale", tmp_path / "a")
    first.up(nodes=1, control_planes=1, subnet="192.168.252.0/24", mirror_dir=Path("/nonexistent"), say=lambda m: None)
    try:
        # same name, other state directory: it would share the bridge and node names
        second = Lab("labstale", tmp_path / "b")
        with pytest.raises(LabError, match=r"--name: a lab named labstale is already on this host.*lab down"):
            second.up(nodes=1, control_planes=1, mirror_dir=Path("/nonexistent"), say=lambda m: None)
        assert nspawn.machines_running("labstale") and not second.key.exists()
        # `lab down` by name clears what the other state directory left, then up works
        second.down(say=lambda m: None)
        assert nspawn.machines_running("labstale") == {}
        assert subprocess.run(["ip", "link", "show", "pvl-labstale"], capture_output=True).returncode != 0
        acng = subprocess.run(["pgrep", "-af", "apt-cacher-ng"], capture_output=True, text=True).stdout
        assert "labstale" not in acng
        second.up(nodes=1, control_planes=1, subnet="192.168.252.0/24", mirror_dir=Path("/nonexistent"), say=print)
        assert _hosts(second)[0].check_output("hostname") == "cp1"
        second.down(say=lambda m: None)
    finally:
        first.down(say=lambda m: None)


def test_lab_up_with_more_nodes_keeps_the_edited_cluster_file(tmp_path: Path) -> None:
    """`lab up --nodes 2` over a 1-node lab whose cluster file was edited by hand: w1 is booted
    and appended, every edit (a version, a label, a taint, a comment) is kept; before that, a
    file that clashes with w1 is refused and nothing is booted or saved (issue 13, item 5)."""
    lab = Lab("labmerge", tmp_path)
    lab.down(say=lambda m: None)  # whatever an interrupted earlier run left
    try:
        lab.up(nodes=1, control_planes=1, subnet="192.168.243.0/24", mirror_dir=Path("/nonexistent"), say=print)
        edited = (
            lab.cluster_file.read_text()
            .replace("  proxy_mode: iptables\n", "  proxy_mode: iptables\n  version: v1.36.3  # pinned by hand\n")
            .replace("  - control-plane\n", "  - control-plane\n  labels: {tier: infra}\n  taints: [a=b:NoSchedule]\n")
        )
        assert "pinned by hand" in edited and "tier: infra" in edited
        clash = edited.replace("address: 192.168.243.11", "address: 192.168.243.21")  # w1's address to be
        lab.cluster_file.write_text(clash)
        state = lab.state_file.read_text()
        with pytest.raises(LabError, match=r"cannot take the lab's new nodes safely .*nothing was changed"):
            lab.up(nodes=2, control_planes=1, mirror_dir=Path("/nonexistent"), say=print)
        assert lab.cluster_file.read_text() == clash and lab.state_file.read_text() == state
        assert list(nspawn.machines_running("labmerge")) == ["labmerge-cp1"]

        lab.cluster_file.write_text(edited)
        lab.up(nodes=2, control_planes=1, mirror_dir=Path("/nonexistent"), say=print)
        assert lab.cluster_file.read_text() == edited + "- name: w1\n  address: 192.168.243.21\n  roles:\n  - worker\n"
        cluster = spec.load(lab.cluster_file)
        assert cluster.kubernetes.version == "v1.36.3" and [n.name for n in cluster.nodes] == ["cp1", "w1"]
        assert cluster.nodes[0].labels == {"tier": "infra"} and cluster.nodes[0].taints == ["a=b:NoSchedule"]
        assert [r["state"] for r in lab.status()] == ["running", "running"]
        assert _hosts(lab)[1].check_output("hostname") == "w1"
    finally:
        lab.down(say=lambda m: None)
    assert nspawn.machines_running("labmerge") == {}
