"""Unit tests of `cluster validate` (provisioner.validate, provisioner/checks): the checks run
through testinfra's Ansible backend and the cluster's generated inventory, take the node's
groups and the cluster's values from that inventory, and every result is filed under the
node it ran on (and written as JUnit XML with --junit).

No cluster is needed. One test runs hand-written checks (with the shipped conftest.py) on
inventory hosts that have ``ansible_connection: local``. The others run the shipped checks
over real SSH, through the generated inventory, against an sshd the test starts on
127.0.0.1/127.0.0.2 (needs root and Debian's openssh-server, else skipped). Most Kubernetes
checks fail on this machine, as expected: what is tested is that every check ran on every
node, was attributed to it, and that ssh trusted only the cluster's pinned host keys."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from provisioner import inventory, spec, ssh, validate
from provisioner.cli import app
from provisioner.state import ClusterDir

SSHD = Path("/usr/sbin/sshd")
SHIPPED = sorted(
    line.split("(")[0].removeprefix("def test_")
    for checks in sorted(validate.CHECKS.glob("test_*.py"))
    for line in checks.read_text().splitlines()
    if line.startswith("def test_")
)


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ansible.cfg from the working directory; nothing lands in ./clusters


def two_nodes_data(key: str = "~/.ssh/id_ed25519", port: int = 22, **network: Any) -> dict[str, Any]:
    return {
        "name": "vt",
        "kubernetes": {"cluster_domain": "unit.test"},
        "network": network,
        "ssh": {"user": "root", "private_key": key, "port": port},
        "nodes": [
            {"name": "cp1", "address": "127.0.0.1", "roles": ["etcd", "control-plane"]},
            {"name": "w1", "address": "127.0.0.2", "roles": ["worker"]},
        ],
    }


def two_nodes(key: str = "~/.ssh/id_ed25519", port: int = 22, **network: Any) -> spec.ClusterSpec:
    return spec.from_dict(two_nodes_data(key, port, **network))


def test_the_node_is_the_host_part_of_the_test_id() -> None:
    assert validate.node_of("test_node.py::test_node_ready[ansible://cp1]") == "cp1"
    assert validate.node_of("checks/test_node.py::test_x[ansible://w-1.example]") == "w-1.example"
    assert validate.node_of("test_node.py::test_x") == ""


def test_the_inventory_is_rewritten_from_the_cluster_file_keeping_its_download_list(tmp_path: Path) -> None:
    s = two_nodes()
    cdir = ClusterDir(tmp_path / "vt")
    downloads = {"kube_node": [{"name": "kubelet", "url": "http://192.0.2.1/kubelet", "sha256": "0" * 64}]}
    inventory.write(inventory.build(s, inventory.assign_pod_blocks(s, {}), cdir.root, downloads), cdir.inventory)
    (cdir.inventory / "hosts.yaml").write_text("# stale\n")

    validate.write_inventory(s, cdir)

    assert yaml.safe_load((cdir.inventory / "hosts.yaml").read_text())["all"]["hosts"].keys() == {"cp1", "w1"}
    group_vars = yaml.safe_load((cdir.inventory / "group_vars" / "all.yml").read_text())
    assert group_vars["download_artifacts"] == downloads and group_vars["cluster_domain"] == "unit.test"


# -- hand-written checks on local hosts ------------------------------------------------------

CHECKS = """
def test_sees_the_inventory(host, node, hostvars, groups):
    assert host.backend.NAME == "ansible"
    assert node.address == {"cp1": "127.0.0.1", "w1": "127.0.0.2"}[node.name]
    assert hostvars["cluster_domain"] == "unit.test" and hostvars["cluster_name"] == "vt"
    assert hostvars["kube_service_ip"] == "10.233.0.1" and hostvars["api_lb_port"] == 6444
    assert groups["etcd"] == ["cp1"] and groups["kube_node"] == ["w1"]
    assert sorted(groups["k8s_cluster"]) == ["cp1", "w1"] and "k8s_cluster" in node.groups


def test_only_on_etcd(node):
    node.require("etcd")


def test_runs_on_the_host(host, node):
    assert host.run("echo %s", node.name).stdout.strip() == node.name


def test_fails_on_w1(node):
    assert node.name != "w1", "w1 fails this one"
"""


@pytest.fixture
def local_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated inventory, with every host reached by `ansible_connection: local`."""
    build = inventory.build

    def local(s: spec.ClusterSpec, blocks: dict[str, str], cluster_dir: Path, *rest: Any) -> inventory.Inventory:
        inv = build(s, blocks, cluster_dir, *rest)
        for hv in inv.hosts["all"]["hosts"].values():
            hv["ansible_connection"] = "local"
        return inv

    monkeypatch.setattr(inventory, "build", local)


def checks_package(tmp_path: Path, **files: str) -> Path:
    """A directory of checks with the shipped conftest.py, as a package with a name of its own
    (pytest imports it under that name, once per process)."""
    checks = tmp_path / f"checks_{tmp_path.name}"
    checks.mkdir()
    (checks / "__init__.py").write_text("")
    shutil.copy(validate.CHECKS / "conftest.py", checks / "conftest.py")
    for name, text in files.items():
        (checks / f"{name}.py").write_text(text)
    return checks


def test_checks_take_groups_and_values_from_the_inventory(tmp_path: Path, local_connection: None) -> None:
    s = two_nodes()
    cdir = ClusterDir(tmp_path / "clusters" / "vt")
    inv_dir = validate.write_inventory(s, cdir)
    assert (inv_dir / "hosts.yaml").exists() and (inv_dir / "group_vars" / "all.yml").exists()
    assert set(cdir.read_blocks()) == {"cp1", "w1"}, "pod blocks recorded as `inventory generate` does"
    checks = checks_package(tmp_path, test_probe=CHECKS)
    junit = tmp_path / "reports" / "validate.xml"
    results = {n.name: validate.NodeResult(n.name, n.address) for n in s.nodes}

    cp1, w1 = validate.run_checks(inv_dir, results, junit=junit, checks=checks, suite="validate-vt")

    assert sorted(cp1.passed) == ["fails_on_w1", "only_on_etcd", "runs_on_the_host", "sees_the_inventory"]
    assert (cp1.failed, cp1.skipped) == ({}, [])
    assert sorted(w1.passed) == ["runs_on_the_host", "sees_the_inventory"]
    assert w1.skipped == ["only_on_etcd"]
    assert list(w1.failed) == ["fails_on_w1"] and "w1 fails this one" in w1.failed["fails_on_w1"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "validate-vt"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("8", "1", "1")
    names = sorted(str(case.get("name")) for case in suite.iter("testcase"))
    assert names[:2] == ["test_fails_on_w1[ansible://cp1]", "test_fails_on_w1[ansible://w1]"]


def test_a_run_that_collects_nothing_says_why_on_every_node(tmp_path: Path, local_connection: None) -> None:
    s = two_nodes()
    inv_dir = validate.write_inventory(s, ClusterDir(tmp_path / "vt"))
    checks = checks_package(tmp_path, test_broken="import no_such_module_here\n")
    results = {n.name: validate.NodeResult(n.name, n.address) for n in s.nodes}
    for r in validate.run_checks(inv_dir, results, checks=checks):
        assert not r.ok and "no_such_module_here" in r.failed["checks"], r.failed


# -- the shipped checks over real SSH ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    port: int
    key: Path  # the client key sshd accepts for root
    host_key_line: str  # the server's public key, as known_hosts lists it
    log: Path

    def pin(self, known_hosts: Path, *addresses: str) -> None:
        names = ",".join(f"[{a}]:{self.port}" for a in addresses)
        known_hosts.write_text(f"{names} {self.host_key_line}\n")

    def logins(self) -> int:
        return self.log.read_text().count("Accepted publickey for root")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 and 127.0.0.2 (one port) that lets one key in as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (sshd's privilege separation, and logging in as root)")
    if not SSHD.exists() or shutil.which("ssh") is None:
        pytest.skip("needs /usr/sbin/sshd and ssh (Debian's openssh-server and -client)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    key = tmp_path / "id_ed25519"
    k = Ed25519PrivateKey.generate()
    key.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    key.chmod(0o600)
    public = k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    (tmp_path / "authorized_keys").write_text(public.decode() + "\n")
    host_key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {host_key}\nPermitRootLogin yes\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\nMaxStartups 100\n"
    )
    log = tmp_path / "sshd.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)], stderr=err)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.2", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start: {log.read_text()}")
                time.sleep(0.1)
        line = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        yield Sshd(port, key, line, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cluster_file(tmp_path: Path, sshd: Sshd) -> tuple[Path, spec.ClusterSpec]:
    # a service subnet on loopback: the CoreDNS check's query is refused at once instead of timing out
    data = two_nodes_data(str(sshd.key), sshd.port, service_subnet="127.77.0.0/24")
    path = tmp_path / "vt.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path, spec.from_dict(data)


def _every_check_ran_on(node: dict[str, Any]) -> list[str]:
    return sorted([*node["passed"], *node["failed"], *node["skipped"]])


def test_cluster_validate_runs_the_shipped_checks_on_every_node_over_ssh(tmp_path: Path, sshd: Sshd) -> None:
    path, _ = _cluster_file(tmp_path, sshd)
    cdir = ClusterDir.for_cluster("vt", tmp_path / "state")
    cdir.ensure()
    sshd.pin(ssh.known_hosts_file(cdir.root), "127.0.0.1", "127.0.0.2")
    junit = tmp_path / "junit.xml"

    r = CliRunner().invoke(
        app,
        [
            "cluster",
            "validate",
            "-f",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
            "-o",
            "json",
            "--junit",
            str(junit),
        ],
    )

    assert r.exit_code == 1, r.output  # no Kubernetes here: checks fail
    cp1, w1 = json.loads(r.stdout)
    assert (cp1["node"], w1["node"]) == ("cp1", "w1")
    assert _every_check_ran_on(cp1) == _every_check_ran_on(w1) == SHIPPED
    assert "etcd_healthy_with_every_member" in w1["skipped"] and "etcd_healthy_with_every_member" in cp1["failed"]
    assert "node_ready" in w1["failed"], "a k8s_cluster check runs on a worker"
    for node in (cp1, w1):
        assert not any("Host key verification" in m or "Permission denied" in m for m in node["failed"].values())
    assert sshd.logins() > 0, "the checks logged in over SSH"
    assert (cdir.inventory / "hosts.yaml").exists(), "validate wrote the inventory it used"
    cases = ET.parse(junit).getroot().iter("testcase")
    assert sorted(str(c.get("name")).partition("[")[2] for c in cases) == sorted(
        [f"ansible://{n}]" for n in ("cp1", "w1")] * len(SHIPPED)
    )


def test_a_host_key_that_is_not_pinned_is_refused(tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")  # a caller's setting does not weaken the inventory's
    _, s = _cluster_file(tmp_path, sshd)
    cdir = ClusterDir(tmp_path / "vt").ensure()
    ssh.known_hosts_file(cdir.root).write_text("")
    junit = tmp_path / "junit.xml"

    results = validate.run(s, cdir.root, junit=junit)

    assert [r.name for r in results] == ["cp1", "w1"]
    for r in results:
        assert not r.passed and not r.ok
        assert sorted([*r.failed, *r.skipped]) == SHIPPED
    assert sshd.logins() == 0
    assert "Host key verification failed" in junit.read_text()
    assert os.environ["ANSIBLE_HOST_KEY_CHECKING"] == "False", "the run's environment is put back"


def test_the_inventorys_ssh_options_reach_the_ssh_command_line(tmp_path: Path) -> None:
    """What testinfra's Ansible backend makes of an inventory host: OpenSSH with the inventory's
    ansible_ssh_common_args as they are, no StrictHostKeyChecking=no of its own, and none from
    an ansible.cfg of the working directory either (validate gives the run its own)."""
    from testinfra.utils.ansible_runner import AnsibleRunner

    s = two_nodes("/keys/id", 2222)
    inv_dir = validate.write_inventory(s, ClusterDir(tmp_path / "vt"))
    common = "-o UserKnownHostsFile=/pinned/known_hosts -o StrictHostKeyChecking=yes"
    (inv_dir / "host_vars").mkdir()
    (inv_dir / "host_vars" / "w1.yml").write_text(f"ansible_ssh_common_args: {common}\n")
    (tmp_path / "ansible.cfg").write_text("[ssh_connection]\nssh_args = -o StrictHostKeyChecking=no\n")
    with validate._ssh_session() as env, validate._environment(validate._checks_environment() | env):
        host = AnsibleRunner(str(inv_dir)).get_host("w1")
    assert host is not None and host.backend.NAME == "ssh"
    cmd, cmd_args = host.backend._build_ssh_command("true")
    line = " ".join(cmd) % tuple(cmd_args)
    assert common in line and "StrictHostKeyChecking=no" not in line
    assert "-o User=root" in line and "-o Port=2222" in line and "-i /keys/id" in line and "127.0.0.2 true" in line
    assert "-o ControlMaster=auto" in line and "/cp/%C" in line, "one multiplexed connection per node"


ANSIBLE_CHECKS = """
def test_over_ssh(host):
    assert host.run("true").rc == 0


def test_through_ansible(host):
    assert host.ansible("ping", check=False)["ping"] == "pong"
"""


def test_ansible_itself_keeps_host_key_checking_too(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """host.ansible() runs Ansible, whose host_key_checking=False would put StrictHostKeyChecking=no
    before the inventory's options; validate sets it to True for the run, whatever the caller has."""
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    _, s = _cluster_file(tmp_path, sshd)
    cdir = ClusterDir(tmp_path / "vt").ensure()
    sshd.pin(ssh.known_hosts_file(cdir.root), "127.0.0.1")  # cp1's address only
    inv_dir = validate.write_inventory(s, cdir)
    results = {n.name: validate.NodeResult(n.name, n.address) for n in s.nodes}
    junit = tmp_path / "junit.xml"

    cp1, w1 = validate.run_checks(inv_dir, results, junit=junit, checks=checks_package(tmp_path, test_a=ANSIBLE_CHECKS))

    assert sorted(cp1.passed) == ["over_ssh", "through_ansible"] and not cp1.failed
    assert sorted(w1.failed) == ["over_ssh", "through_ansible"] and not w1.passed
    cases = {str(c.get("name")): ET.tostring(c, encoding="unicode") for c in ET.parse(junit).getroot().iter("testcase")}
    assert "Host key verification failed" in cases["test_through_ansible[ansible://w1]"]
    assert "Host key verification failed" in cases["test_over_ssh[ansible://w1]"]
