"""The HA lab cluster, shared by the test files of this package and removed after the last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.conftest import Cluster, create, make_cluster

HA_ROUTE_REFLECTORS = ["cp1", "cp3"]


@pytest.fixture(scope="package")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The HA lab (3 control planes with etcd + 1 worker, BGP through two route reflectors),
    created once and shared by every test file in this package (test_ha, the add-ons, the VIP,
    chaos), to keep CI time down."""
    for lab, state in make_cluster(
        "e2eb",
        "192.168.254.0/24",
        nodes=4,
        control_planes=3,
        tmp=tmp_path_factory.mktemp("e2eb"),
        test_images=True,  # test_upstream.py runs the Granular Checks on it
    ):
        spec = yaml.safe_load(lab.cluster_file.read_text())
        spec["network"]["route_reflectors"] = HA_ROUTE_REFLECTORS
        # cluster chaos (test_chaos.py) waits for dead nodes to go NotReady: 20 s, not Kubernetes' 50 s
        spec["kubernetes"]["node_monitor_grace_period"] = 20
        lab.cluster_file.write_text(yaml.safe_dump(spec))
        yield Cluster(lab, lab.cluster_file, state, create(lab, state))
