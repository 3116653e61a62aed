"""A two-subnet lab (`lab up --subnets 2`, or --subnet twice), on a fake host (no root, no machine
containers): the control planes on the first subnet, the workers alternating between the two
bridges, each node routed to the other subnet through the host, the host forwarding on both
bridges only, and the cluster file saying encapsulation vxlan, cross-subnet. A one-subnet lab is
unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import spec
from provisioner.lab import manager, nspawn, services
from tests.unit.test_lab_up import fake_host  # noqa: F401  (the fixture)


@pytest.fixture
def host(fake_host: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # noqa: F811
    seen: dict[str, Any] = {"bridges": [], "forwarding": [], "specs": []}
    monkeypatch.setattr(
        services, "bridge_up", lambda name, net: seen["bridges"].append((name, str(net))) or str(net[1])
    )
    monkeypatch.setattr(services, "forwarding_on", lambda bridge: seen["forwarding"].append(bridge))
    monkeypatch.setattr(nspawn, "make_rootfs", lambda s, base: seen["specs"].append(s))
    return seen


def test_next_subnet_and_node_subnet() -> None:
    assert manager.next_subnet("192.168.236.0/24") == "192.168.237.0/24"
    two = ["192.168.236.0/24", "192.168.237.0/24"]
    assert [manager.node_subnet(n, two) for n in ("cp1", "cp2", "w1", "w2", "w3")] == [
        two[0],
        two[0],
        two[1],
        two[0],
        two[1],
    ]
    assert manager.node_subnet("w1", two[:1]) == two[0]


def test_two_subnet_lab(host: dict[str, Any], tmp_path: Path) -> None:
    lab = manager.Lab("enc", tmp_path / "state", root=tmp_path / "root")
    lab.up(nodes=3, control_planes=1, subnet="192.168.236.0/24", second_subnet="192.168.237.0/24", say=lambda m: None)
    assert host["bridges"] == [("pvl-enc", "192.168.236.0/24"), ("pvl2-enc", "192.168.237.0/24")]
    assert host["forwarding"] == ["pvl-enc", "pvl2-enc"]
    by_name = {s.name: s for s in host["specs"]}
    assert by_name["cp1"].address == "192.168.236.11/24" and by_name["cp1"].bridge == "pvl-enc"
    assert by_name["cp1"].routes == (("192.168.237.0/24", "192.168.236.1"),)
    assert by_name["w1"].address == "192.168.237.21/24" and by_name["w1"].bridge == "pvl2-enc"
    assert by_name["w1"].routes == (("192.168.236.0/24", "192.168.237.1"),)
    assert by_name["w2"].address == "192.168.236.22/24"
    data = yaml.safe_load(lab.cluster_file.read_text())
    assert data["network"]["encapsulation"] == "vxlan" and data["network"]["encapsulation_mode"] == "cross-subnet"
    assert data["artifacts"]["files_repo"] == "http://192.168.236.1:8088"
    spec.load(lab.cluster_file)  # valid
    st = lab.state()
    assert st is not None and st.second_subnet == "192.168.237.0/24"
    # more nodes later: the state keeps both subnets
    lab.up(nodes=4, control_planes=1, say=lambda m: None)
    assert {s.name: s.address for s in host["specs"]}["w3"] == "192.168.237.23/24"


def test_one_subnet_lab_is_unchanged(host: dict[str, Any], tmp_path: Path) -> None:
    lab = manager.Lab("one", tmp_path / "state", root=tmp_path / "root")
    lab.up(nodes=3, control_planes=1, subnet="192.168.236.0/24", say=lambda m: None)
    assert host["bridges"] == [("pvl-one", "192.168.236.0/24")] and host["forwarding"] == []
    assert all(s.routes == () and s.bridge == "pvl-one" for s in host["specs"])
    assert [s.address for s in host["specs"]] == ["192.168.236.11/24", "192.168.236.21/24", "192.168.236.22/24"]
    assert yaml.safe_load(lab.cluster_file.read_text())["network"]["encapsulation"] == "none"


def test_two_subnets_that_overlap_are_refused(host: dict[str, Any], tmp_path: Path) -> None:
    from provisioner.lab.host import LabError

    lab = manager.Lab("bad", tmp_path / "state", root=tmp_path / "root")
    with pytest.raises(LabError, match="overlap"):
        lab.up(nodes=3, subnet="192.168.236.0/24", second_subnet="192.168.236.0/24", say=lambda m: None)


def test_node_network_file_routes_the_other_subnet(tmp_path: Path) -> None:
    base = tmp_path / "base"
    dirs = ("etc/systemd/network", "etc/systemd/system/multi-user.target.wants", "etc/systemd/system.conf.d")
    for d in (
        *dirs,
        "etc/systemd/system/sysinit.target.wants",
        "usr/local/sbin",
        "etc/apt/apt.conf.d",
        "etc/ssh",
        "root",
    ):
        (base / d).mkdir(parents=True)
    node = nspawn.NodeSpec(
        lab="l",
        name="w1",
        address="192.168.237.21/24",
        gateway="192.168.237.254",
        bridge="pvl2-l",
        proxy="http://192.168.237.1:3142",
        rootfs=tmp_path / "w1",
        public_key="ssh-ed25519 AAAA x",
        routes=(("192.168.236.0/24", "192.168.237.1"),),
    )
    nspawn.make_rootfs(node, base)
    text = (node.rootfs / "etc/systemd/network/10-host0.network").read_text()
    assert "[Route]\nDestination=192.168.236.0/24\nGateway=192.168.237.1\n" in text
