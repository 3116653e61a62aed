"""Unit tests of preflight (provisioner.preflight): judge() on given facts (each problem
fails its own named check), and check_host()/run() against a real sshd (Debian's
openssh-server) that the test starts on 127.0.0.1 with its own keys."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner import preflight, spec

SSHD = Path("/usr/sbin/sshd")
GOOD_FACTS = {
    "python3": "/usr/bin/python3",
    "os_id": "debian",
    "os_version": "12",
    "swap": "0",
    "cgroupfs": "cgroup2fs",
    "uid": "0",
    "sudo": "root",
    "arch": "x86_64",
}
CHECKS = {"sudo", "python3", "os", "arch", "swap", "cgroup", "ports"}


def cluster(
    address: str = "192.0.2.11", port: int = 22, key: str = "~/.ssh/id_ed25519", node_port: int | None = None
) -> spec.ClusterSpec:
    return spec.from_dict(
        {
            "name": "pf",
            "ssh": {"user": "root", "private_key": key, "port": port},
            "nodes": [
                {"name": "cp1", "address": address, "roles": ["etcd", "control-plane"], "ssh_port": node_port},
                {"name": "w1", "address": "192.0.2.21", "roles": ["worker"]},
            ],
        }
    )


def judged(
    facts: dict[str, str], listening: dict[int, str] | None = None, node: str = "cp1"
) -> dict[str, preflight.Check]:
    s = cluster()
    checks = preflight.judge(s.node(node), s, facts, listening or {})
    assert len(checks) == len({c.name for c in checks}), "one check per name"
    return {c.name: c for c in checks}


def report(checks: dict[str, preflight.Check]) -> preflight.HostReport:
    return preflight.HostReport("cp1", "192.0.2.11", list(checks.values()))


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"os_id": "debian", "os_version": "13"},
        {"os_id": "ubuntu", "os_version": "24.04"},
        {"sudo": "ok", "uid": "1000"},
    ],
    ids=["debian12-root", "debian13", "ubuntu24.04", "sudo-user"],
)
def test_a_good_host_passes(change: dict[str, str]) -> None:
    checks = judged({**GOOD_FACTS, **change})
    assert set(checks) == CHECKS
    assert all(c.ok for c in checks.values()), checks
    assert report(checks).ok and report(checks).failures() == []
    assert checks["cgroup"].detail == "v2" and checks["ports"].detail == "free"


@pytest.mark.parametrize(
    ("change", "name", "detail"),
    [
        ({"sudo": "no", "uid": "1000"}, "sudo", "user 1000 has no passwordless sudo; add a NOPASSWD sudoers rule"),
        ({"python3": ""}, "python3", "python3 not found; install it (apt-get install python3)"),
        ({"os_id": "centos", "os_version": "7"}, "os", "centos 7 is not supported; use one of debian 12"),
        ({"os_id": "debian", "os_version": "11"}, "os", "debian 11 is not supported"),
        ({"arch": "aarch64"}, "arch", "aarch64: only x86_64 artifacts are mirrored"),
        ({"cgroupfs": "ext4"}, "cgroup", "unknown cgroup filesystem 'ext4'"),
    ],
    ids=["no-sudo", "no-python", "wrong-os", "old-debian", "arm", "no-cgroupfs"],
)
def test_each_problem_fails_its_named_check(change: dict[str, str], name: str, detail: str) -> None:
    checks = judged({**GOOD_FACTS, **change})
    assert [c.name for c in report(checks).failures()] == [name]
    assert not checks[name].warning and detail in checks[name].detail
    assert not report(checks).ok


def test_nothing_probed_fails_rather_than_passes() -> None:
    """An empty probe output (a broken shell, say) must not look like a good host."""
    failed = {c.name for c in report(judged({})).failures()}
    assert failed >= {"sudo", "python3", "os", "arch", "cgroup"}


def test_swap_on_is_a_named_warning_that_does_not_stop_the_run() -> None:
    checks = judged({**GOOD_FACTS, "swap": "2"})
    swap = checks["swap"]
    assert not swap.ok and swap.warning and swap.detail == "2 swap device(s) on; create turns swap off"
    assert report(checks).ok and report(checks).failures() == []


def test_cgroup_v1_is_a_warning_and_v2_is_expected() -> None:
    v1 = judged({**GOOD_FACTS, "cgroupfs": "tmpfs"})["cgroup"]
    assert not v1.ok and v1.warning and "v1: kubelet gets failCgroupV1=false" in v1.detail
    v2 = judged(GOOD_FACTS)["cgroup"]
    assert v2.ok and not v2.warning
    facts = {"cgroupfs": "tmpfs"}
    assert preflight.HostReport("a", "b", facts=facts).cgroup_version == 1
    assert preflight.HostReport("a", "b", facts={"cgroupfs": "cgroup2fs"}).cgroup_version == 2


def test_ports_held_by_others_fail_and_are_named() -> None:
    busy = judged(GOOD_FACTS, {6443: "python3", 2380: "nc", 2379: "etcd", 10250: ""})["ports"]
    assert not busy.ok and not busy.warning
    assert busy.detail == "in use: 2380 (nc), 6443 (python3), 10250 (unknown process); stop what holds them"


def test_our_own_services_on_a_rerun_pass() -> None:
    ours = {6443: "kube-apiserver", 2379: "etcd", 2380: "etcd", 10250: "kubelet", 6444: "nginx", 179: "bird"}
    assert judged(GOOD_FACTS, ours)["ports"].ok


def test_ports_depend_on_the_roles() -> None:
    """A worker does not need 6443 or the etcd ports; every node needs the kubelet's and the LB's."""
    assert judged(GOOD_FACTS, {6443: "python3", 2379: "x"}, node="w1")["ports"].ok
    assert not judged(GOOD_FACTS, {10250: "python3"}, node="w1")["ports"].ok
    assert not judged(GOOD_FACTS, {6444: "python3"}, node="w1")["ports"].ok


def test_the_probe_output_is_parsed() -> None:
    facts, listening = preflight._parse("os_id=debian\nlisten=6443/kube-apiserver\nlisten=22/sshd\nlisten=x/y\nnoise\n")
    assert facts == {"os_id": "debian"} and listening == {6443: "kube-apiserver", 22: "sshd"}


def test_preflight_failed_names_every_host_and_check() -> None:
    bad = preflight.HostReport("w1", "192.0.2.21", [preflight.Check("python3", False, "python3 not found")])
    good = report(judged(GOOD_FACTS))
    message = str(preflight.PreflightFailed([good, bad]))
    assert message == "preflight failed; nothing was changed:\nw1 (192.0.2.21): python3: python3 not found"


# -- a real sshd ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key(path: Path) -> str:
    """Write an ed25519 private key (OpenSSH format, 0600); return its public line."""
    k = Ed25519PrivateKey.generate()
    path.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@dataclass
class Sshd:
    port: int
    good_key: Path  # in authorized_keys
    bad_key: Path  # not
    log: Path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1:<free port> that accepts one key for root, and only keys."""
    if os.geteuid() != 0:
        pytest.skip("needs root (sshd's privilege separation, and logging in as root)")
    if not SSHD.exists():
        pytest.skip("needs /usr/sbin/sshd (Debian's openssh-server; sudo make host-packages)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    good, bad = tmp_path / "good_ed25519", tmp_path / "bad_ed25519"
    (tmp_path / "authorized_keys").write_text(_key(good) + "\n")
    _key(bad)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key")], check=True)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\nPermitRootLogin yes\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\n"
    )
    log = tmp_path / "sshd.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)], stderr=err)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start: {log.read_text()}")
                time.sleep(0.1)
        yield Sshd(port, good, bad, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_preflight_over_real_ssh(sshd: Sshd) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.good_key))
    [r] = preflight.run(s, [s.node("cp1")])
    checks = {c.name: c for c in r.checks}
    assert [c.name for c in r.checks[:2]] == ["reachable", "ssh key"]
    assert checks["reachable"].ok and checks["reachable"].detail == f"127.0.0.1:{sshd.port}"
    assert checks["ssh key"].ok and checks["ssh key"].detail == "root with good_ed25519"
    # the probe ran on the host: these facts come from this machine, read over SSH
    assert checks["sudo"].ok and checks["sudo"].detail == "root"
    assert r.facts["uid"] == "0" and r.facts["python3"].endswith("python3") and r.facts["arch"] == os.uname().machine
    assert r.facts["os_id"] and set(checks) == {"reachable", "ssh key"} | CHECKS


def test_a_key_that_is_not_authorized_is_named(sshd: Sshd) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.bad_key))
    [r] = preflight.run(s, [s.node("cp1")])
    assert not r.ok
    [failure] = r.failures()
    assert failure.name == "ssh key"
    assert failure.detail.startswith(f"root@127.0.0.1 with {sshd.bad_key}: ") and "Authentication" in failure.detail
    assert r.facts == {}, "nothing was probed"
    assert f"cp1 (127.0.0.1): ssh key: root@127.0.0.1 with {sshd.bad_key}" in str(preflight.PreflightFailed([r]))


def test_a_nodes_own_ssh_port_wins(sshd: Sshd) -> None:
    s = cluster("127.0.0.1", 1, str(sshd.good_key), node_port=sshd.port)
    r = preflight.check_host(s.node("cp1"), s)
    assert r.ok, r.checks
    assert r.checks[0].detail == f"127.0.0.1:{sshd.port}"


def test_an_unreachable_host_and_a_missing_key_are_named(tmp_path: Path) -> None:
    key = tmp_path / "k"
    _key(key)
    s = cluster("127.0.0.1", _free_port(), str(key))
    [r] = preflight.run(s, [s.node("cp1")], timeout=2)
    [failure] = r.failures()
    assert failure.name == "reachable" and failure.detail.startswith("cannot connect to 127.0.0.1:")
    s = cluster("127.0.0.1", 22, str(tmp_path / "nope"))
    reports = preflight.run(s)
    assert [r.name for r in reports] == ["cp1", "w1"], "every node, in file order"
    for r in reports:
        assert [(c.name, c.detail) for c in r.checks] == [
            ("ssh key", f"ssh.private_key: {tmp_path / 'nope'} does not exist")
        ]
