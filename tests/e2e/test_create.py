"""cluster create on the lab, from the mirror: topology (a) 1 control plane + 2 workers, on a
two-subnet lab (cp1 and w2 on 192.168.253.0/24, w1 on 192.168.243.0/24, the host routing between
them) with network.encapsulation vxlan, cross-subnet: every test below runs over it.

The cluster is created by the wheel, installed into a fresh venv outside the checkout;
the later tests use the checkout's CLI and plain ansible-playbook on the same cluster, and
show that the truth lives on the nodes: a state directory that did not create the
cluster is refused, and so is a node whose SSH host key changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from provisioner.lab.manager import DEFAULT_MIRROR
from provisioner.versions import DEFAULT_KUBERNETES, SUPPORTED_KUBERNETES
from tests.e2e import network_policy, upstream
from tests.e2e.conftest import ROOT, Cluster, changed_tasks, create, installed_wheel, make_cluster, provisioner
from tests.e2e.workloads import check_workloads

pytestmark = pytest.mark.e2e
WHEEL_RUN: dict[str, str] = {}
# the suite's subnets; a developer whose lab would clash with a CI run gives others (E2EA_SUBNETS=A,B)
SUBNET, SECOND_SUBNET = os.environ.get("E2EA_SUBNETS", "192.168.253.0/24,192.168.243.0/24").split(",")


@pytest.fixture(scope="module")
def lab_a(tmp_path_factory: pytest.TempPathFactory):
    yield from make_cluster(
        "e2ea",
        SUBNET,
        nodes=3,
        control_planes=1,
        tmp=tmp_path_factory.mktemp("e2ea"),
        second_subnet=SECOND_SUBNET,
        test_images=True,  # the upstream Granular Checks and Netpol suites run on it
    )


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def cluster_a(lab_a, wheel_venv: Path) -> Cluster:
    lab, state = lab_a
    cli = [str(wheel_venv / "bin" / "provisioner")]
    cluster = Cluster(lab, lab.cluster_file, state, create(lab, state, cli=cli, cwd=wheel_venv))
    WHEEL_RUN["ansible.cfg"] = (state / "e2ea" / "ansible.cfg").read_text()  # later commands rewrite it
    return cluster


def test_unreachable_node_fails_in_preflight_and_changes_nothing(lab_a, tmp_path: Path) -> None:
    lab, state = lab_a
    spec = yaml.safe_load(lab.cluster_file.read_text())
    spec["nodes"].append({"name": "ghost", "address": SUBNET.replace(".0/24", ".99"), "roles": ["worker"]})
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(spec))
    proc = provisioner("cluster", "create", "-f", str(bad), "--state-dir", str(state), check=False)
    assert proc.returncode == 1
    assert f"ghost ({SUBNET.replace('.0/24', '.99')}): reachable" in proc.stderr
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


def test_the_cluster_came_from_the_installed_wheel(cluster_a: Cluster, wheel_venv: Path) -> None:
    """The wheel carries the playbooks, roles, checks and Go pins: its own copy ran."""
    where = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", "import provisioner.paths as p; print(p.PLAYBOOKS, p.GO_MODULES)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=wheel_venv,
    ).stdout.split()
    assert all(str(wheel_venv) in w and Path(w).is_dir() for w in where), where
    assert f"roles_path = {where[0]}/roles" in WHEEL_RUN["ansible.cfg"]
    plan = provisioner(
        "cluster", "plan", "-f", str(cluster_a.file), "-o", "json", cli=[str(wheel_venv / "bin" / "provisioner")]
    )
    assert [n["name"] for n in json.loads(plan.stdout)["nodes"]] == ["cp1", "w1", "w2"]


def test_plain_ansible_playbook_with_the_inventory_changes_nothing(cluster_a: Cluster) -> None:
    """kubespray's way, no provisioner and no ansible.cfg: the inventory carries everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    inventory = cluster_a.state_dir / "e2ea" / "inventory"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "playbooks/cluster.yml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)
    assert sorted(h for h, _ in recap) == ["cp1", "w1", "w2"], proc.stdout[-2000:]
    assert all(c == "0" for _, c in recap), recap


def _ca_on(cluster: Cluster, node: str) -> str:
    import testinfra

    row = next(r for r in cluster.lab.status() if r["node"] == node)
    host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster.lab.key}")
    return host.check_output("sha256sum /etc/kubernetes/pki/ca.crt")


def test_a_state_dir_that_did_not_create_the_cluster_is_refused(cluster_a: Cluster, tmp_path: Path) -> None:
    before = _ca_on(cluster_a, "cp1")
    proc = provisioner("cluster", "create", "-f", str(cluster_a.file), "--state-dir", str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cp1: the node trusts the cluster CA sha256:" in proc.stderr
    assert "this state directory did not create the cluster" in proc.stderr
    assert "nothing was changed" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "e2ea" / "pki").exists(), "no CA may be made over a running cluster"
    assert _ca_on(cluster_a, "cp1") == before


def test_with_only_the_pki_copied_a_version_change_is_still_refused(cluster_a: Cluster, tmp_path: Path) -> None:
    shutil.copytree(cluster_a.state_dir / "e2ea" / "pki", tmp_path / "e2ea" / "pki")
    spec = cluster_a.spec()
    running = spec["kubernetes"].get("version") or DEFAULT_KUBERNETES
    other = next(v for v in SUPPORTED_KUBERNETES if v != running)
    spec["kubernetes"]["version"] = other
    changed = tmp_path / "cluster.yaml"
    changed.write_text(yaml.safe_dump(spec))
    proc = provisioner("cluster", "create", "-f", str(changed), "--state-dir", str(tmp_path), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"kubernetes.version: the cluster runs {running} and the file says {other}" in proc.stderr
    assert "nothing was changed" in proc.stderr


def test_a_node_whose_host_key_changed_is_refused(cluster_a: Cluster) -> None:
    import testinfra

    row = next(r for r in cluster_a.lab.status() if r["node"] == "w2")
    host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster_a.lab.key}")
    host.check_output(
        "rm -f /etc/ssh/ssh_host_*; ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key"
        " && systemctl restart ssh"
    )
    args = ("cluster", "preflight", "-f", str(cluster_a.file), "--state-dir", str(cluster_a.state_dir))
    proc = provisioner(*args, check=False)
    assert proc.returncode != 0
    assert "w2" in proc.stderr and "host key" in proc.stderr and "SHA256:" in proc.stderr, proc.stderr
    create_proc = provisioner(
        "cluster", "create", "-f", str(cluster_a.file), "--state-dir", str(cluster_a.state_dir), check=False
    )
    assert create_proc.returncode != 0 and "host key" in create_proc.stderr
    provisioner(*args, "--accept-host-key", "w2")  # re-pinned on purpose: passes again


# -- NetworkPolicy (network.policy, on by default): kube-router's policy controller -------------
# One server pod on w1; clients on w1 (same node: across the CNI bridge) and on w2 (routed), and
# a visitor in another namespace on w2. Each policy is applied, checked by real connections that
# are answered or refused, and deleted again.

ALL_CLIENTS = ("near", "far", "visitor")


@pytest.fixture(scope="module")
def policy_lab(cluster_a: Cluster) -> Iterator[network_policy.Lab]:
    lab = network_policy.start(cluster_a, server_node="w1", other_node="w2")
    lab.expect("no policy: every client reaches web", {(c, 8080): True for c in ALL_CLIENTS})
    yield lab
    network_policy.stop(cluster_a)


def test_network_policy_default_deny_ingress(policy_lab: network_policy.Lab) -> None:
    with policy_lab.policy(network_policy.DENY_INGRESS):
        policy_lab.expect("deny-ingress refuses every client", {(c, 8080): False for c in ALL_CLIENTS})
    policy_lab.expect("deny-ingress deleted: every client reaches web", {(c, 8080): True for c in ALL_CLIENTS})


def test_network_policy_allow_by_pod_label(policy_lab: network_policy.Lab) -> None:
    with policy_lab.policy(network_policy.DENY_INGRESS + "---" + network_policy.ALLOW_CLIENTS):
        policy_lab.expect(
            "role=client pods of the namespace are let in, the other namespace's are not",
            {("near", 8080): True, ("far", 8080): True, ("visitor", 8080): False},
        )


def test_network_policy_allow_by_namespace_label(policy_lab: network_policy.Lab) -> None:
    with policy_lab.policy(network_policy.DENY_INGRESS + "---" + network_policy.ALLOW_VISITORS):
        policy_lab.expect(
            "only pods of namespaces labelled team=visitors are let in",
            {("near", 8080): False, ("far", 8080): False, ("visitor", 8080): True},
        )


def test_network_policy_named_port(policy_lab: network_policy.Lab) -> None:
    with policy_lab.policy(network_policy.DENY_INGRESS + "---" + network_policy.ALLOW_NAMED_PORT):
        policy_lab.expect(
            "the port named http (8080) is open, 8081 is not",
            {("near", 8080): True, ("near", 8081): False, ("far", 8080): True, ("far", 8081): False},
        )


def test_network_policy_ip_block_with_except(policy_lab: network_policy.Lab, cluster_a: Cluster) -> None:
    far_ip = network_policy.pod_ip(cluster_a, policy_lab.clients["far"])
    subnet = network_policy.pod_subnet(cluster_a)
    allow = network_policy.ALLOW_BLOCK_EXCEPT.replace("POD_SUBNET", subnet).replace("EXCEPT", far_ip)
    with policy_lab.policy(network_policy.DENY_INGRESS + "---" + allow):
        policy_lab.expect(
            f"the pod subnet is let in except {far_ip}/32 (far)",
            {("near", 8080): True, ("far", 8080): False, ("visitor", 8080): True},
        )


def test_network_policy_egress_deny(policy_lab: network_policy.Lab) -> None:
    with policy_lab.policy(network_policy.DENY_EGRESS):
        policy_lab.expect(
            "the clients of the namespace may not send; the visitor still reaches web",
            {("near", 8080): False, ("far", 8080): False, ("visitor", 8080): True},
        )


# -- encapsulation vxlan, cross-subnet (network.encapsulation) ------------------------------------
# cp1 and w2 share a subnet, w1 is on the other one. A server on w2 sends a 4 MiB file to a client
# on cp1 (same subnet: routed directly by BIRD's route) and to a client on w1 (other subnet: through
# pod-vxlan); the VXLAN device's byte counters show that only the second was encapsulated.

ENCAP_NS = "encap"
BIG = 4 * 1024 * 1024
ENCAP_PODS = """
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}}}
spec:
  nodeName: w2
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, "mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1024 count={kib} 2>/dev/null
                && exec httpd -f -p 8080 -h /tmp/www"]
---
apiVersion: v1
kind: Pod
metadata: {{name: same-subnet, namespace: {ns}}}
spec:
  nodeName: cp1
  terminationGracePeriodSeconds: 1
  tolerations: [{{operator: Exists}}]
  containers: [{{name: c, image: {image}, imagePullPolicy: Never, command: [sleep, "86400"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: other-subnet, namespace: {ns}}}
spec:
  nodeName: w1
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: {image}, imagePullPolicy: Never, command: [sleep, "86400"]}}]
"""


def _node(cluster: Cluster, name: str):  # a testinfra host
    import testinfra

    row = next(r for r in cluster.lab.status() if r["node"] == name)
    return testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster.lab.key}")


def _tunnel_bytes(cluster: Cluster, node: str, device: str) -> dict[str, int]:
    stats = f"/sys/class/net/{device}/statistics"
    out = _node(cluster, node).check_output(f"cat {stats}/tx_bytes {stats}/rx_bytes")
    tx, rx = (int(x) for x in out.split())
    return {"tx": tx, "rx": rx}


def _pod_to_pod_across_subnets(cluster: Cluster, device: str, mtu: int) -> None:
    """w2's server sends 4 MiB to a client on cp1 (same subnet) and to one on w1 (other subnet);
    ``device``'s byte counters show that only the second went through the tunnel."""
    from tests.e2e.workloads import busybox_image

    cluster.kubectl("delete", "namespace", ENCAP_NS, "--ignore-not-found", "--wait=true", timeout=300)
    cluster.apply(ENCAP_PODS.format(ns=ENCAP_NS, image=busybox_image(), kib=BIG // 1024))
    try:
        for pod in ("web", "same-subnet", "other-subnet"):
            cluster.kubectl(
                "-n", ENCAP_NS, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=180s", timeout=200
            )
        ips = {
            p["metadata"]["name"]: p["status"]["podIP"]
            for p in cluster.kubectl_json("-n", ENCAP_NS, "get", "pods")["items"]
        }
        # the routes: w2 reaches cp1's pod directly (BIRD, metric 32), w1's through the tunnel
        w2 = _node(cluster, "w2")
        assert "dev host0" in w2.check_output(f"ip route get {ips['same-subnet']}")
        assert f"dev {device}" in w2.check_output(f"ip route get {ips['other-subnet']}")
        # the pods' MTU: the nodes' 1500 minus the tunnel's overhead
        got_mtu = cluster.kubectl("-n", ENCAP_NS, "exec", "web", "--", "cat", "/sys/class/net/eth0/mtu").strip()
        assert got_mtu == str(mtu), got_mtu

        def fetch(client: str) -> dict[str, dict[str, int]]:
            before = {n: _tunnel_bytes(cluster, n, device) for n in ("w2", "cp1", "w1")}
            get = f"printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {ips['web']} 8080 | wc -c"
            got = int(cluster.kubectl("-n", ENCAP_NS, "exec", client, "--", "sh", "-c", get, timeout=120).strip())
            assert got > BIG, f"{client} got {got} bytes of web's {BIG}-byte file"
            after = {n: _tunnel_bytes(cluster, n, device) for n in ("w2", "cp1", "w1")}
            return {n: {k: after[n][k] - before[n][k] for k in ("tx", "rx")} for n in after}

        same = fetch("same-subnet")
        other = fetch("other-subnet")
        # within the subnet: the 4 MiB did not go through the tunnel (a little other pod traffic may)
        assert same["w2"]["tx"] < BIG // 4 and same["cp1"]["rx"] < BIG // 4, same
        # across subnets: all of it did, at both ends
        assert other["w2"]["tx"] > BIG and other["w1"]["rx"] > BIG, other
    finally:
        cluster.kubectl("delete", "namespace", ENCAP_NS, "--ignore-not-found", "--wait=false")


def test_pod_to_pod_across_subnets_is_encapsulated_and_within_one_is_not(cluster_a: Cluster) -> None:
    net = cluster_a.spec()["network"]
    assert (net["encapsulation"], net["encapsulation_mode"]) == ("vxlan", "cross-subnet")
    _pod_to_pod_across_subnets(cluster_a, "pod-vxlan", 1450)


def _host_has_ipip() -> bool:
    """Whether preflight would accept ipip here: its own kernel probe and check, run on this host,
    whose kernel the lab's nodes share."""
    from provisioner.preflight import _parse, kernel_module_check, kmod_probe

    out = subprocess.run(["sh", "-c", kmod_probe("ipip")], capture_output=True, text=True, check=False).stdout
    facts, _ = _parse(out)
    return kernel_module_check("ipip", ("network.encapsulation ipip", ""), facts).ok


def test_changing_the_encapsulation_of_the_running_cluster_is_refused(cluster_a: Cluster, tmp_path: Path) -> None:
    """The decision: a running cluster's encapsulation (and pod MTU) is not changed by create, since
    its pods keep the MTU they started with; refused before any change, naming a node."""
    spec = cluster_a.spec()
    spec["network"].update(encapsulation="none", encapsulation_mode="always")
    changed = tmp_path / "cluster.yaml"
    changed.write_text(yaml.safe_dump(spec))
    proc = provisioner("cluster", "create", "-f", str(changed), "--state-dir", str(cluster_a.state_dir), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "network.encapsulation: cp1 runs the pod network with encapsulation vxlan and the file says none" in (
        proc.stderr
    )
    assert "nothing was changed" in proc.stderr and "Traceback" not in proc.stderr
    assert _node(cluster_a, "w1").file("/sys/class/net/pod-vxlan").exists


def test_encapsulation_ipip_fails_in_preflight_where_the_kernel_lacks_it(cluster_a: Cluster, tmp_path: Path) -> None:
    """ipip runs the same code path as vxlan (its configuration is unit-tested); its data path is
    tested wherever the kernel has it. This kernel has none: preflight refuses, naming each host."""
    if _host_has_ipip():
        pytest.skip("this kernel has ipip: the refusal cannot be shown here (the data path test below runs instead)")
    spec = cluster_a.spec()
    spec["network"]["encapsulation"] = "ipip"
    changed = tmp_path / "cluster.yaml"
    changed.write_text(yaml.safe_dump(spec))
    proc = provisioner("cluster", "preflight", "-f", str(changed), "--state-dir", str(cluster_a.state_dir), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for name in ("cp1", "w1", "w2"):
        pattern = rf"{name} \([0-9.]+\): kernel ipip: network.encapsulation ipip needs the kernel module ipip"
        assert re.search(pattern, proc.stderr), proc.stderr


def test_encapsulation_ipip_data_path(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where the kernel has ipip: a cluster of its own (two subnets, ipip cross-subnet), the same
    pod-to-pod check as vxlan's through pod-ipip, then its reset."""
    if not _host_has_ipip():
        pytest.skip(
            "this kernel has no ipip (monolithic, not built in): encapsulation ipip is refused by preflight "
            "(test above); its BIRD, CNI and tunnel configuration is unit-tested (tests/unit/test_encapsulation.py)"
        )
    first, second = os.environ.get("E2EI_SUBNETS", "192.168.242.0/24,192.168.238.0/24").split(",")
    labs = make_cluster(
        "e2ei", first, nodes=3, control_planes=1, tmp=tmp_path_factory.mktemp("e2ei"), second_subnet=second
    )
    lab, state = next(labs)
    try:
        spec = yaml.safe_load(lab.cluster_file.read_text())
        spec["network"].update(encapsulation="ipip", encapsulation_mode="cross-subnet")
        lab.cluster_file.write_text(yaml.safe_dump(spec))
        cluster = Cluster(lab, lab.cluster_file, state, create(lab, state))
        _pod_to_pod_across_subnets(cluster, "pod-ipip", 1480)
        provisioner("cluster", "reset", "-f", str(lab.cluster_file), "--state-dir", str(state), "--yes")
        assert not _node(cluster, "w1").file("/sys/class/net/pod-ipip").exists
    finally:
        labs.close()  # lab down


# -- Kubernetes' own network tests, over VXLAN across the two subnets ----------------------------


def test_upstream_networking_granular_checks_over_vxlan_cross_subnet(cluster_a: Cluster, tmp_path: Path) -> None:
    """The Networking Granular Checks [Conformance] on this two-subnet cluster (vxlan,
    cross-subnet): the framework's pods land on w1 and w2, one per subnet, so pod to pod and
    node to pod go through the tunnel and the host's router. (The HA cluster runs them with
    encapsulation none on one subnet: tests/e2e/ha/test_upstream.py.)"""
    result = upstream.run_suite(cluster_a, upstream.GRANULAR_CHECKS, tmp_path)
    assert result.passed, f"no spec ran:\n{result.output}"
    assert not result.failed and result.returncode == 0, result.summary() + "\n" + result.output


def test_upstream_network_policy_over_vxlan_cross_subnet(cluster_a: Cluster, tmp_path: Path) -> None:
    """The focused Netpol subset (tests/e2e/upstream.py) with kube-router enforcing over the tunnel."""
    result = upstream.run_suite(cluster_a, upstream.NETPOL_FOCUSED, tmp_path)
    assert result.passed, f"no spec ran:\n{result.output}"
    assert not result.failed and result.returncode == 0, result.summary() + "\n" + result.output
