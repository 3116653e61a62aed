"""Unit tests of Lab.up over an existing lab's cluster file, on a fake host (no root, no
machine containers): more nodes are appended and the user's edits kept, a node the user
deleted stays deleted, and a clash is refused before anything is saved or booted (issue 13,
item 5; the merge itself: test_lab_file.py)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def fake_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> list[str]:
    """Lab.up's host side replaced: the nodes it would boot are recorded instead."""
    from provisioner.lab import base_image, manager, nspawn, services

    booted: list[str] = []
    monkeypatch.setattr(manager, "require_host", lambda: None)
    monkeypatch.setattr(nspawn, "machines_running", lambda lab: {})
    monkeypatch.setattr(services, "bridge_exists", lambda name: False)
    monkeypatch.setattr(services, "subnet_user", lambda net, bridge: None)
    monkeypatch.setattr(base_image, "image_dir", lambda: tmp_path / "image")
    monkeypatch.setattr(base_image, "ensure", lambda log: (tmp_path / "image", 0.0))
    monkeypatch.setattr(services, "raise_inotify_limit", lambda: None)
    monkeypatch.setattr(services, "bridge_up", lambda name, net: str(net[-2]))
    monkeypatch.setattr(services, "apt_proxy_up", lambda state, ip: f"http://{ip}:3142")
    monkeypatch.setattr(services, "mirror_up", lambda state, ip, d: f"http://{ip}:8088")
    monkeypatch.setattr(nspawn, "pid_of", lambda s, d: 1 if s.name in booted else None)
    monkeypatch.setattr(nspawn, "make_rootfs", lambda s, base: None)
    monkeypatch.setattr(manager.Lab, "pin_host_keys", lambda self, specs: None)
    monkeypatch.setattr(nspawn, "boot", lambda s, d: booted.append(s.name) or 1)
    monkeypatch.setattr(nspawn, "wait_ssh", lambda ip: 0.0)
    return booted


def test_lab_up_with_more_nodes_appends_them_and_keeps_the_edits(fake_host: list[str], tmp_path: Any) -> None:
    from provisioner.lab.manager import Lab

    lab = Lab("lab", tmp_path / "state", root=tmp_path / "root")
    lab.up(nodes=3, control_planes=1, subnet="192.168.250.0/24", say=lambda m: None)
    written = lab.cluster_file.read_text()
    edited = written.replace("  proxy_mode: iptables\n", "  proxy_mode: iptables\n  version: v1.36.3  # by hand\n")
    edited = edited.replace("- name: w2\n", "# w2 is special\n- name: w2\n  labels: {tier: infra}\n")
    assert edited.count("by hand") == 1 and "w2 is special" in edited
    lab.cluster_file.write_text(edited)

    said: list[str] = []
    lab.up(nodes=4, control_planes=1, say=said.append)
    assert lab.cluster_file.read_text() == edited + "- name: w3\n  address: 192.168.250.23\n  roles:\n  - worker\n"
    assert any("w3 appended" in line for line in said), said
    assert fake_host == ["cp1", "w1", "w2", "w3"]

    # the user deletes w1 from the file: another `lab up` (same or more nodes) does not bring it back
    without_w1 = lab.cluster_file.read_text().replace(
        "- name: w1\n  address: 192.168.250.21\n  roles:\n  - worker\n", ""
    )
    lab.cluster_file.write_text(without_w1)
    lab.up(nodes=4, control_planes=1, say=lambda m: None)
    assert lab.cluster_file.read_text() == without_w1


def test_lab_up_refuses_a_clash_before_changing_anything(fake_host: list[str], tmp_path: Any) -> None:
    from provisioner.lab.host import LabError
    from provisioner.lab.manager import Lab

    lab = Lab("lab", tmp_path / "state", root=tmp_path / "root")
    lab.up(nodes=2, control_planes=1, subnet="192.168.250.0/24", say=lambda m: None)
    clash = lab.cluster_file.read_text().replace("- name: w1\n", "- name: w2\n")  # w1 renamed to w2 by hand
    lab.cluster_file.write_text(clash)
    state = lab.state_file.read_text()
    with pytest.raises(LabError, match=r"cannot take the lab's new nodes safely \(its node w2 is at 192.168.250.21"):
        lab.up(nodes=3, control_planes=1, say=lambda m: None)
    assert lab.cluster_file.read_text() == clash and lab.state_file.read_text() == state
    assert fake_host == ["cp1", "w1"], "no node booted"
