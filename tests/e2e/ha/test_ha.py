"""cluster create, topology (b): 3 control planes with etcd + 1 worker, BGP through two
route reflectors (cp1, cp3), and losing one control plane."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.e2e.conftest import Cluster, changed_tasks, create, provisioner
from tests.e2e.ha.conftest import HA_ROUTE_REFLECTORS as RRS
from tests.e2e.workloads import busybox_image, check_workloads

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


POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
    - {{name: main, image: {image}, imagePullPolicy: Never, command: [sleep, "3600"]}}
"""


def test_one_control_plane_down(ha_cluster: Cluster) -> None:
    """cp2 stops: kubectl (its kubeconfig points at cp1), the kubelets on the other nodes,
    and scheduling keep working. The kubelets reach the API through their local
    load balancer, which moves to the API servers that are left."""
    ha_cluster.lab.stop_node("cp2")
    try:
        assert "cp2" in ha_cluster.kubectl("get", "nodes")
        ha_cluster.apply(POD.format(name="after-cp2-down", image=busybox_image()))
        ha_cluster.wait(
            "a new pod Running with cp2 down",
            lambda: ha_cluster.kubectl_json("get", "pod", "after-cp2-down")["status"].get("phase") == "Running",
            timeout=120,
        )
        # the surviving kubelets still renew their node leases through their load balancers
        stopped_at = datetime.now(UTC)

        def leases_renewed() -> bool:
            for name in ("cp1", "cp3", "w1"):
                lease = ha_cluster.kubectl_json("get", "lease", "-n", "kube-node-lease", name)
                renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
                if renewed <= stopped_at:
                    return False
            return True

        ha_cluster.wait("cp1, cp3 and w1 to renew their leases with cp2 down", leases_renewed, timeout=60)
    finally:
        ha_cluster.lab.start_node("cp2")
