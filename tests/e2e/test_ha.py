"""cluster create, topology (b): 3 control planes with etcd + 1 worker, BGP through two
route reflectors (cp1, cp3), and losing one control plane."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from tests.e2e.conftest import Cluster, changed_tasks, create, make_cluster, provisioner
from tests.e2e.workloads import busybox_image, check_workloads

pytestmark = pytest.mark.e2e
RRS = ["cp1", "cp3"]


@pytest.fixture(scope="module")
def cluster_b(tmp_path_factory: pytest.TempPathFactory):
    for lab, state in make_cluster(
        "e2eb", "192.168.254.0/24", nodes=4, control_planes=3, tmp=tmp_path_factory.mktemp("e2eb")
    ):
        spec = yaml.safe_load(lab.cluster_file.read_text())
        spec["network"]["route_reflectors"] = RRS
        lab.cluster_file.write_text(yaml.safe_dump(spec))
        yield Cluster(lab, lab.cluster_file, state, create(lab, state))


def test_create_then_validate(cluster_b: Cluster) -> None:
    proc = provisioner(
        "cluster", "validate", "-f", str(cluster_b.file), "--state-dir", str(cluster_b.state_dir), check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workloads(cluster_b: Cluster) -> None:
    check_workloads(cluster_b, nodes=["cp1", "cp2", "cp3", "w1"], route_reflectors=RRS)


def test_second_create_changes_nothing(cluster_b: Cluster) -> None:
    again = create(cluster_b.lab, cluster_b.state_dir)
    assert changed_tasks(again) == {h: 0 for h in ("cp1", "cp2", "cp3", "w1")}, changed_tasks(again)


POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
    - {{name: main, image: {image}, imagePullPolicy: Never, command: [sleep, "3600"]}}
"""


def test_one_control_plane_down(cluster_b: Cluster) -> None:
    """cp2 stops: kubectl (its kubeconfig points at cp1), the kubelets on the other nodes,
    and scheduling keep working. The kubelets reach the API through their local
    load balancer, which moves to the API servers that are left."""
    cluster_b.lab.stop_node("cp2")
    try:
        assert "cp2" in cluster_b.kubectl("get", "nodes")
        cluster_b.apply(POD.format(name="after-cp2-down", image=busybox_image()))
        cluster_b.wait(
            "a new pod Running with cp2 down",
            lambda: cluster_b.kubectl_json("get", "pod", "after-cp2-down")["status"].get("phase") == "Running",
            timeout=120,
        )
        # the surviving kubelets still renew their node leases through their load balancers
        stopped_at = datetime.now(UTC)

        def leases_renewed() -> bool:
            for name in ("cp1", "cp3", "w1"):
                lease = cluster_b.kubectl_json("get", "lease", "-n", "kube-node-lease", name)
                renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
                if renewed <= stopped_at:
                    return False
            return True

        cluster_b.wait("cp1, cp3 and w1 to renew their leases with cp2 down", leases_renewed, timeout=60)
    finally:
        cluster_b.lab.start_node("cp2")
