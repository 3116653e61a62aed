"""Unit tests of preflight: judge() on given facts, and check_host()/run() against a real
sshd (Debian's openssh-server) that the test starts on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner import preflight, spec

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


def cluster(address: str = "192.168.250.11", port: int = 22, key: str = "~/.ssh/id_ed25519") -> spec.ClusterSpec:
    return spec.from_dict(
        {
            "name": "pf",
            "ssh": {"user": "root", "private_key": key, "port": port},
            "nodes": [{"name": "cp1", "address": address, "roles": ["etcd", "control-plane"]}],
        }
    )


def judged(facts: dict[str, str], listening: dict[int, str] | None = None) -> dict[str, preflight.Check]:
    s = cluster()
    return {c.name: c for c in preflight.judge(s.nodes[0], s, facts, listening or {})}


def test_a_good_host_passes() -> None:
    checks = judged(GOOD_FACTS)
    assert all(c.ok for c in checks.values()), checks
    assert set(checks) == {"sudo", "python3", "os", "arch", "swap", "cgroup", "ports"}


@pytest.mark.parametrize(
    ("change", "name", "detail"),
    [
        ({"sudo": "no", "uid": "1000"}, "sudo", "NOPASSWD"),
        ({"python3": ""}, "python3", "apt-get install python3"),
        ({"os_id": "centos", "os_version": "7"}, "os", "is not supported"),
        ({"arch": "aarch64"}, "arch", "only x86_64"),
        ({"cgroupfs": "ext4"}, "cgroup", "unknown cgroup filesystem"),
    ],
)
def test_each_problem_fails_its_named_check(change: dict[str, str], name: str, detail: str) -> None:
    check = judged({**GOOD_FACTS, **change})[name]
    assert not check.ok and not check.warning and detail in check.detail


def test_swap_and_cgroup_v1_are_warnings() -> None:
    checks = judged({**GOOD_FACTS, "swap": "1", "cgroupfs": "tmpfs"})
    assert checks["swap"].warning and not checks["swap"].ok
    assert checks["cgroup"].warning and "v1" in checks["cgroup"].detail


def test_ports_held_by_others_fail_but_our_own_services_pass() -> None:
    busy = judged(GOOD_FACTS, {6443: "python3", 2379: "etcd"})["ports"]
    assert not busy.ok and "6443 (python3)" in busy.detail and "2379" not in busy.detail
    assert judged(GOOD_FACTS, {6443: "kube-apiserver", 10250: "kubelet"})["ports"].ok


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key(path: Path) -> str:
    k = Ed25519PrivateKey.generate()
    path.write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return k.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A real sshd on 127.0.0.1:<free port> that accepts one key for root."""
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs root and /usr/sbin/sshd (openssh-server; sudo make host-packages)")
    Path("/run/sshd").mkdir(exist_ok=True)
    good, bad = tmp_path / "good", tmp_path / "bad"
    (tmp_path / "authorized_keys").write_text(_key(good) + "\n")
    _key(bad)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host")], check=True)
    port = _free_port()
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host'}\nPermitRootLogin prohibit-password\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
        "UsePAM no\nPidFile none\n"
    )
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp_path / "sshd_config")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"sshd did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield port, good, bad
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_preflight_over_real_ssh(sshd: tuple[int, Path, Path]) -> None:
    port, good, _ = sshd
    s = cluster("127.0.0.1", port, str(good))
    [report] = preflight.run(s)
    checks = {c.name: c for c in report.checks}
    assert checks["reachable"].ok and checks["ssh key"].ok, report.checks
    assert checks["sudo"].ok and checks["sudo"].detail == "root"
    assert checks["python3"].ok and checks["arch"].ok
    assert report.facts["os_id"]  # read from the host's /etc/os-release


def test_a_key_that_is_not_authorized_is_named(sshd: tuple[int, Path, Path]) -> None:
    port, _, bad = sshd
    [report] = preflight.run(cluster("127.0.0.1", port, str(bad)))
    assert not report.ok
    [failure] = report.failures()
    assert failure.name == "ssh key" and "root@127.0.0.1" in failure.detail and "Authentication" in failure.detail
    message = str(preflight.PreflightFailed([report]))
    assert "cp1 (127.0.0.1): ssh key:" in message and "nothing was changed" in message


def test_an_unreachable_host_and_a_missing_key_are_named(tmp_path: Path) -> None:
    [report] = preflight.run(cluster("127.0.0.1", _free_port(), str(_key_path(tmp_path))), timeout=2)
    assert [c.name for c in report.failures()] == ["reachable"]
    [report] = preflight.run(cluster("127.0.0.1", 22, str(tmp_path / "nope")))
    assert "ssh.private_key" in report.failures()[0].detail and "does not exist" in report.failures()[0].detail


def _key_path(tmp_path: Path) -> Path:
    path = tmp_path / "k"
    _key(path)
    return path


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_probe_parsing() -> None:
    facts, listening = preflight._parse("os_id=debian\nlisten=6443/kube-apiserver\nlisten=22/sshd\nnoise\n")
    assert facts == {"os_id": "debian"} and listening == {6443: "kube-apiserver", 22: "sshd"}
