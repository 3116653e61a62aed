"""Unit tests of kubernetes.eviction_hard (the cluster file, the kubelet's configuration) and of
the lab's share of the host disk: its lower thresholds and `lab up`'s refusal of a full disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import spec
from provisioner.lab import host
from tests.unit import role_templates
from tests.unit.role_templates import host_vars

SAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "sample" / "ha.yaml"


def cluster(eviction: dict[str, Any]) -> spec.ClusterSpec:
    data = spec.load(SAMPLE).model_dump(mode="json")
    data["kubernetes"]["eviction_hard"] = eviction
    return spec.from_dict(data)


def kubelet_config(c: spec.ClusterSpec) -> dict[str, Any]:
    variables = {**host_vars(c), "node_cgroup_version": 1, "node_taints": [], "node_labels": {}}
    return yaml.safe_load(role_templates.render("node", "kubelet-config.yaml.j2", variables))


def test_no_setting_keeps_the_kubelets_defaults() -> None:
    assert "evictionHard" not in kubelet_config(cluster({}))


def test_thresholds_are_rendered_as_given() -> None:
    config = kubelet_config(cluster(host.LAB_EVICTION_HARD))
    assert config["evictionHard"] == host.LAB_EVICTION_HARD


def test_unknown_signal_and_bad_threshold_are_named() -> None:
    with pytest.raises(spec.SpecError) as err:
        cluster({"imagefs.availabel": "5%", "nodefs.available": "five", "memory.available": "120%"})
    text = "\n".join(err.value.problems)
    assert (
        "kubernetes.eviction_hard.imagefs.availabel: not a kubelet eviction signal; did you mean imagefs.available?"
        in text
    )
    assert "kubernetes.eviction_hard.nodefs.available: 'five' is not a threshold" in text
    assert "kubernetes.eviction_hard.memory.available: '120%' is not a threshold" in text


class FakeStatvfs:
    """Unit-test fake of os.statvfs's answer: ``free`` blocks of 100 available."""

    def __init__(self, free: int) -> None:
        self.f_blocks, self.f_bavail, self.f_frsize = 100 * 2**18, free * 2**18, 4096  # 100 GiB disk


def test_lab_up_refuses_a_nearly_full_host_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "statvfs", lambda path: FakeStatvfs(7))
    with pytest.raises(host.LabError) as err:
        host.require_disk(tmp_path / "lab" / "e2ea")  # not made yet: its nearest existing parent counts
    assert str(err.value) == (
        f"{tmp_path}/lab/e2ea: its disk has 7 GiB free (7.0 %); the lab's kubelets share it and need 10 % free, "
        "or they taint their nodes with disk-pressure: free at least 3 GiB first"
    )
    monkeypatch.setattr(os, "statvfs", lambda path: FakeStatvfs(12))
    host.require_disk(tmp_path)


def test_the_lab_asks_for_twice_its_thresholds() -> None:
    pct = {float(v[:-1]) for k, v in host.LAB_EVICTION_HARD.items() if v.endswith("%")}
    assert host.LAB_MIN_FREE_PCT == 2 * max(pct)
