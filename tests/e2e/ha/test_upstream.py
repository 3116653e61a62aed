"""Kubernetes' upstream network tests on the HA lab cluster (encapsulation none, one subnet):
the Networking Granular Checks that are Conformance (what kubespray's CI runs) and a
representative part of the NetworkPolicy suite (Netpol), from the mirror's e2e.test and
agnhost. A failing spec fails the test; the JUnit reports go to build/junit/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.upstream import GRANULAR_CHECKS, NETPOL, NETPOL_FOCUSED, run_suite, untainted

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster_u(ha_cluster: Cluster) -> Iterator[Cluster]:
    """The HA cluster with cp2 open to the e2e pods beside w1 (its only worker): two nodes."""
    with untainted(ha_cluster, ["cp2"]):
        yield ha_cluster


def test_upstream_networking_granular_checks(cluster_u: Cluster, tmp_path: Path) -> None:
    result = run_suite(cluster_u, GRANULAR_CHECKS, tmp_path)
    assert result.passed, f"no spec ran:\n{result.output}"
    assert not result.failed and result.returncode == 0, result.summary() + "\n" + result.output


def test_upstream_network_policy(cluster_u: Cluster, tmp_path: Path) -> None:
    """The focused Netpol subset; PROVISIONER_NETPOL_FULL=1 runs the whole suite."""
    suite = NETPOL if os.environ.get("PROVISIONER_NETPOL_FULL") == "1" else NETPOL_FOCUSED
    result = run_suite(cluster_u, suite, tmp_path)
    assert result.passed, f"no spec ran:\n{result.output}"
    assert not result.failed and result.returncode == 0, result.summary() + "\n" + result.output
