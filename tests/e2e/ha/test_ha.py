"""cluster create, topology (b): 3 control planes with etcd + 1 worker, BGP through two
route reflectors (cp1, cp3). Losing a control plane (cp1, the API VIP's holder) is
test_vip.py's."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cluster, changed_tasks, create, provisioner
from tests.e2e.ha.conftest import HA_ROUTE_REFLECTORS as RRS
from tests.e2e.workloads import check_workloads

pytestmark = pytest.mark.e2e


def test_create_then_validate(ha_cluster: Cluster) -> None:
    proc = provisioner(
        "cluster", "validate", "-f", str(ha_cluster.file), "--state-dir", str(ha_cluster.state_dir), check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workloads(ha_cluster: Cluster) -> None:
    check_workloads(ha_cluster, nodes=["cp1", "cp2", "cp3", "w1"], route_reflectors=RRS)


def test_second_create_changes_nothing(ha_cluster: Cluster) -> None:
    again = create(ha_cluster.lab, ha_cluster.state_dir)
    assert changed_tasks(again) == {h: 0 for h in ("cp1", "cp2", "cp3", "w1")}, changed_tasks(again)
