"""cluster create on the lab, from the mirror: topology (a) 1 control plane + 2 workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.lab.manager import DEFAULT_MIRROR
from provisioner.versions import DEFAULT_KUBERNETES
from tests.e2e.conftest import Cluster, changed_tasks, create, make_cluster, provisioner
from tests.e2e.workloads import check_workloads

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def lab_a(tmp_path_factory: pytest.TempPathFactory):
    yield from make_cluster("e2ea", "192.168.253.0/24", nodes=3, control_planes=1, tmp=tmp_path_factory.mktemp("e2ea"))


@pytest.fixture(scope="module")
def cluster_a(lab_a) -> Cluster:
    lab, state = lab_a
    return Cluster(lab, lab.cluster_file, state, create(lab, state))


def test_unreachable_node_fails_in_preflight_and_changes_nothing(lab_a, tmp_path: Path) -> None:
    lab, state = lab_a
    spec = yaml.safe_load(lab.cluster_file.read_text())
    spec["nodes"].append({"name": "ghost", "address": "192.168.253.99", "roles": ["worker"]})
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(spec))
    proc = provisioner("cluster", "create", "-f", str(bad), "--state-dir", str(state), check=False)
    assert proc.returncode == 1
    assert "ghost (192.168.253.99): reachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    import testinfra

    for row in lab.status():
        host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={lab.key}")
        assert not host.file("/etc/kubernetes").exists, f"{row['node']} was changed"
        assert not host.file("/opt/provisioner").exists, f"{row['node']} was changed"


def test_create_then_validate(cluster_a: Cluster) -> None:
    assert cluster_a.kubeconfig.stat().st_mode & 0o777 == 0o600
    proc = provisioner(
        "cluster", "validate", "-f", str(cluster_a.file), "--state-dir", str(cluster_a.state_dir), check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workloads(cluster_a: Cluster) -> None:
    check_workloads(cluster_a, nodes=["cp1", "w1", "w2"])


def test_second_create_changes_nothing(cluster_a: Cluster) -> None:
    again = create(cluster_a.lab, cluster_a.state_dir)
    assert changed_tasks(again) == {h: 0 for h in changed_tasks(again)}, changed_tasks(again)
    assert set(changed_tasks(again)) == {"cp1", "w1", "w2"}


def test_mirror_binaries_and_images_are_the_pinned_ones(cluster_a: Cluster) -> None:
    """The mirror's own artifacts, on a node: the binaries print the pinned versions, and
    the pause and test images imported into the node's containerd run a container."""
    import testinfra

    from provisioner.mirror.manifest import Manifest
    from provisioner.versions import release
    from tests.e2e.workloads import busybox_image

    rel = release(cluster_a.spec()["kubernetes"].get("version") or DEFAULT_KUBERNETES)
    row = cluster_a.lab.status()[0]
    host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_a.lab.key}")
    assert host.check_output("/usr/local/bin/kube-apiserver --version") == f"Kubernetes {rel.kubernetes}"
    assert host.check_output("/usr/local/bin/kubelet --version") == f"Kubernetes {rel.kubernetes}"
    assert rel.etcd.lstrip("v") in host.check_output("/usr/local/bin/etcd --version")
    images = host.check_output("ctr -n k8s.io images ls -q")
    manifest = Manifest.read(DEFAULT_MIRROR)
    pause = manifest.find("image-pause", manifest.versions("image-pause")[-1]).image
    assert pause in images.split() and busybox_image() in images.split(), images
    out = host.check_output(f"ctr -n k8s.io run --rm {busybox_image()} mirror-check echo hello-from-the-test-image")
    assert out == "hello-from-the-test-image"
