"""Unit tests of preflight (provisioner.preflight): judge() on given facts (each problem
fails its own named check), and check_host()/run() against a real sshd (Debian's
openssh-server) that the test starts on 127.0.0.1 with its own keys."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from provisioner import apply, preflight, spec, ssh
from provisioner.cli import app
from provisioner.errors import InputError, ProvisionerError

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
        (
            {"sudo": "no", "uid": "1000", "user": "alice"},
            "sudo",
            "alice (uid 1000) is not root and has no passwordless sudo (sudo -n true failed); log in as root "
            "(ssh.user), or allow it: 'alice ALL=(ALL) NOPASSWD: ALL' in /etc/sudoers.d/alice",
        ),
        ({"sudo": "missing", "uid": "1000", "user": "bob"}, "sudo", "bob (uid 1000) is not root and sudo is not"),
        ({"python3": ""}, "python3", "python3 not found; install it (apt-get install python3)"),
        ({"os_id": "centos", "os_version": "7"}, "os", "centos 7 is not supported; use one of debian 12"),
        ({"os_id": "debian", "os_version": "11"}, "os", "debian 11 is not supported"),
        ({"arch": "aarch64"}, "arch", "aarch64: only x86_64 artifacts are mirrored"),
        ({"cgroupfs": "ext4"}, "cgroup", "unknown cgroup filesystem 'ext4'"),
    ],
    ids=["no-sudo", "no-sudo-installed", "no-python", "wrong-os", "old-debian", "arm", "no-cgroupfs"],
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
    """A real sshd on 127.0.0.1:<port> that accepts one key for root, and only keys. ``restart``
    brings it back on the same port, with a new host key when asked (a re-installed host, or
    another machine at its address)."""

    dir: Path
    port: int
    good_key: Path  # in authorized_keys
    bad_key: Path  # not
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def host_key(self) -> Path:
        return self.dir / "host_key"

    @property
    def log(self) -> Path:
        """This run's log (sshd -e, LogLevel VERBOSE)."""
        return self.dir / f"sshd.{self.starts}.log"

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", f"{self.host_key}.pub"], capture_output=True, text=True, check=True)
        return out.stdout.split()[1]

    def start(self) -> None:
        self.starts += 1
        config = self.dir / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nHostKey {self.host_key}\nPermitRootLogin yes\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\nLogLevel VERBOSE\n"
        )
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(self.port)], stderr=err)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start: {self.log.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            self.host_key.unlink()
            Path(f"{self.host_key}.pub").unlink()
            _host_key(self.host_key)
        self.start()


def _host_key(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1:<free port> that accepts one key for root, and only keys."""
    if os.geteuid() != 0:
        pytest.skip("needs root (sshd's privilege separation, and logging in as root)")
    if not SSHD.exists():
        pytest.skip("needs /usr/sbin/sshd (Debian's openssh-server; sudo make host-packages)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    d = tmp_path / "sshd"
    d.mkdir()
    good, bad = d / "good_ed25519", d / "bad_ed25519"
    (d / "authorized_keys").write_text(_key(good) + "\n")
    _key(bad)
    server = Sshd(d, _free_port(), good, bad)
    _host_key(server.host_key)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_preflight_over_real_ssh(sshd: Sshd, tmp_path: Path) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.good_key))
    [r] = preflight.run(s, [s.node("cp1")], cluster_dir=tmp_path / "cluster")
    checks = {c.name: c for c in r.checks}
    assert [c.name for c in r.checks[:3]] == ["reachable", "host key", "ssh key"]
    assert checks["reachable"].ok and checks["reachable"].detail == f"127.0.0.1:{sshd.port}"
    assert checks["host key"].ok and checks["host key"].detail == f"{sshd.fingerprint()} (pinned now in known_hosts)"
    assert checks["ssh key"].ok and checks["ssh key"].detail == "root with good_ed25519"
    # the probe ran on the host: these facts come from this machine, read over SSH
    assert checks["sudo"].ok and checks["sudo"].detail == "root"
    assert r.facts["uid"] == "0" and r.facts["python3"].endswith("python3") and r.facts["arch"] == os.uname().machine
    assert r.facts["os_id"] and set(checks) == {"reachable", "host key", "ssh key"} | CHECKS


def test_a_key_that_is_not_authorized_is_named(sshd: Sshd, tmp_path: Path) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.bad_key))
    [r] = preflight.run(s, [s.node("cp1")], cluster_dir=tmp_path / "cluster")
    assert not r.ok
    [failure] = r.failures()
    assert failure.name == "ssh key"
    assert failure.detail == (
        f"root@127.0.0.1 refused {sshd.bad_key}: no user root there, or the key is not in its "
        "~/.ssh/authorized_keys; check ssh.user (or the node's ssh_user) and ssh.private_key"
    )
    assert r.checks[1].name == "host key" and r.checks[1].ok, "the host was who it should be; the key was not let in"
    assert r.facts == {}, "nothing was probed"
    assert f"cp1 (127.0.0.1): ssh key: root@127.0.0.1 refused {sshd.bad_key}" in str(preflight.PreflightFailed([r]))


def test_a_nodes_own_ssh_port_wins(sshd: Sshd, tmp_path: Path) -> None:
    s = cluster("127.0.0.1", 1, str(sshd.good_key), node_port=sshd.port)
    r = preflight.check_host(s.node("cp1"), s, tmp_path)
    assert r.ok, r.checks
    assert r.checks[0].detail == f"127.0.0.1:{sshd.port}"
    assert ssh.pinned(tmp_path / "known_hosts", f"[127.0.0.1]:{sshd.port}"), "pinned under the port it answered on"


def test_an_unreachable_host_and_a_missing_key_are_named(tmp_path: Path) -> None:
    key = tmp_path / "k"
    _key(key)
    s = cluster("127.0.0.1", _free_port(), str(key))
    [r] = preflight.run(s, [s.node("cp1")], timeout=2, cluster_dir=tmp_path)
    [failure] = r.failures()
    port = s.ssh.port
    assert failure.name == "reachable" and failure.detail == (
        f"cannot connect to 127.0.0.1:{port}: connection refused; is sshd running on cp1 and listening on "
        f"port {port} (ssh.port, or the node's ssh_port)?"
    )
    s = cluster("127.0.0.1", 22, str(tmp_path / "nope"))
    reports = preflight.run(s, cluster_dir=tmp_path)
    assert [r.name for r in reports] == ["cp1", "w1"], "every node, in file order"
    for r in reports:
        assert [(c.name, c.detail) for c in r.checks] == [
            (
                "ssh key",
                f"ssh.private_key: {tmp_path / 'nope'} does not exist; give the private key that opens the nodes",
            )
        ]
    assert not (tmp_path / "known_hosts").exists(), "nothing answered: nothing pinned"


# -- SSH refused in preflight, naming the host -------------------------------------------------


def _encrypted_key(path: Path, passphrase: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)


def _connections(sshd: Sshd) -> int:
    time.sleep(0.2)  # sshd logs a connection as it accepts it
    return sshd.log.read_text().count("Connection from")


def test_a_key_open_to_other_users_is_refused_before_any_connection(sshd: Sshd, tmp_path: Path) -> None:
    sshd.good_key.chmod(0o644)
    s = cluster("127.0.0.1", sshd.port, str(sshd.good_key))
    before = _connections(sshd)
    reports = preflight.run(s, cluster_dir=tmp_path)
    for r in reports:
        assert [(c.name, c.ok, c.detail) for c in r.checks] == [
            (
                "ssh key",
                False,
                f"ssh.private_key: {sshd.good_key} is mode 0644, open to other users, and ssh refuses such a key; "
                f"chmod 600 {sshd.good_key}",
            )
        ]
    assert (
        str(preflight.PreflightFailed(reports))
        .splitlines()[1]
        .startswith(f"cp1 (127.0.0.1): ssh key: ssh.private_key: {sshd.good_key} is mode 0644")
    )
    assert _connections(sshd) == before, "no node was contacted"


def test_an_encrypted_key_without_an_agent_is_refused(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "locked"
    _encrypted_key(key, "sesame")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    s = cluster("127.0.0.1", sshd.port, str(key))
    before = _connections(sshd)
    [r] = preflight.run(s, [s.node("cp1")], cluster_dir=tmp_path)
    [failure] = r.failures()
    assert _connections(sshd) == before, "no node was contacted"
    assert (failure.name, failure.detail) == (
        "ssh key",
        f"ssh.private_key: {key} is encrypted (it has a passphrase) and no ssh-agent runs (SSH_AUTH_SOCK is unset); "
        f"load it with `ssh-add {key}`, or use a key without a passphrase",
    )


def test_an_encrypted_key_held_by_ssh_agent_logs_in_through_the_agent(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
        pytest.skip("needs ssh-agent and ssh-add (openssh-client)")
    key = tmp_path / "locked"
    _encrypted_key(key, "sesame")
    (sshd.dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho sesame\n")
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True, timeout=30)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        s = cluster("127.0.0.1", sshd.port, str(key))
        [r] = preflight.run(s, [s.node("cp1")], cluster_dir=tmp_path)
        assert r.ok, r.failures()
        assert next(c for c in r.checks if c.name == "ssh key").detail == "root with ssh-agent"
        assert r.facts["uid"] == "0", "the probe ran"
        # and OpenSSH (Ansible's transport) gets in the same way
        done = subprocess.run(
            [
                "ssh",
                "-p",
                str(sshd.port),
                "-i",
                str(key),
                "-o",
                "BatchMode=yes",
                *ssh.ansible_common_args(tmp_path).split(),
                "root@127.0.0.1",
                "true",
            ],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_wrong_user_is_named_with_what_to_check(sshd: Sshd, tmp_path: Path) -> None:
    s = spec.from_dict(
        {
            "name": "pf",
            "ssh": {"user": "nobody-here", "private_key": str(sshd.good_key), "port": sshd.port},
            "nodes": [{"name": "cp1", "address": "127.0.0.1", "roles": ["etcd", "control-plane"]}],
        }
    )
    [r] = preflight.run(s, cluster_dir=tmp_path)
    [failure] = r.failures()
    assert (failure.name, failure.detail) == (
        "ssh key",
        f"nobody-here@127.0.0.1 refused {sshd.good_key}: no user nobody-here there, or the key is not in its "
        "~/.ssh/authorized_keys; check ssh.user (or the node's ssh_user) and ssh.private_key",
    )
    assert r.facts == {}, "nothing ran"


def test_a_file_that_is_no_key_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "id_ed25519"
    bogus.write_text("not a key\n")
    bogus.chmod(0o600)
    [r, _] = preflight.run(cluster("127.0.0.1", 22, str(bogus)), cluster_dir=tmp_path)
    [failure] = r.failures()
    assert failure.name == "ssh key"
    assert failure.detail.startswith(f"ssh.private_key: {bogus} is not a private key ssh can use: ")


def test_a_port_that_does_not_answer_is_named() -> None:
    t = ssh.SshTarget("w1", "192.0.2.21", 2222, "root", Path("k"), Path("kh"))
    assert preflight._unreachable(t, TimeoutError(), 8) == (
        "cannot connect to 192.0.2.21:2222: no answer in 8 s; is w1 up, and port 2222 open?"
    )
    assert preflight._unreachable(t, OSError(113, "No route to host"), 8) == (
        "cannot connect to 192.0.2.21:2222: No route to host"
    )


def test_node_addresses_are_ip_addresses_so_no_name_is_resolved() -> None:
    """A node is reached at its address, which the cluster file requires to be an IPv4
    address: there is no host name that could fail to resolve (refused with exit 2)."""
    with pytest.raises(InputError, match=r"nodes\[0\]\.address: 'cp1\.example\.com' is not an IP address"):
        spec.from_dict(
            {"name": "pf", "nodes": [{"name": "cp1", "address": "cp1.example.com", "roles": ["etcd", "control-plane"]}]}
        )


# -- pinned host keys ------------------------------------------------------------------------


def _openssh(sshd: Sshd, cluster_dir: Path) -> subprocess.CompletedProcess[str]:
    """OpenSSH (as Ansible runs it) with the cluster's pinned keys only."""
    options = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", *ssh.ansible_common_args(cluster_dir).split()]
    return subprocess.run(
        ["ssh", "-p", str(sshd.port), "-i", str(sshd.good_key), *options, "root@127.0.0.1", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_first_contact_pins_the_host_key_and_later_ones_verify_it(sshd: Sshd, tmp_path: Path) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.good_key))
    cdir = tmp_path / "cluster"
    known_hosts = cdir / "known_hosts"
    [first] = preflight.run(s, [s.node("cp1")], cluster_dir=cdir)
    host_key = next(c for c in first.checks if c.name == "host key")
    assert host_key.ok and host_key.detail == f"{sshd.fingerprint()} (pinned now in known_hosts)"
    pub = Path(f"{sshd.host_key}.pub").read_text().split()
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n"
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    [again] = preflight.run(s, [s.node("cp1")], cluster_dir=cdir)
    host_key = next(c for c in again.checks if c.name == "host key")
    assert host_key.ok and host_key.detail == f"{sshd.fingerprint()} (matches the pinned key)"
    assert again.facts, "the probe ran"
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n", "one line, unchanged"
    if shutil.which("ssh"):
        # what preflight pinned is what OpenSSH (Ansible's transport) verifies against
        done = _openssh(sshd, cdir)
        assert done.returncode == 0, done.stderr


def test_a_changed_host_key_fails_and_nothing_is_done_on_the_host(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.good_key))
    cdir = tmp_path / "cluster"
    preflight.run(s, [s.node("cp1")], cluster_dir=cdir)
    pinned_text = (cdir / "known_hosts").read_text()
    assert "Accepted publickey for root" in sshd.log.read_text(), "sshd logs a login (so its absence below means none)"
    old = sshd.fingerprint()
    sshd.restart(new_host_key=True)
    new = sshd.fingerprint()
    assert old != new
    marker = tmp_path / "probed"
    monkeypatch.setattr(preflight, "PROBE", f"touch {marker}\n" + preflight.PROBE)

    [r] = preflight.run(s, [s.node("cp1")], cluster_dir=cdir)
    assert not r.ok
    [failure] = r.failures()
    assert failure.name == "host key" and [c.name for c in r.checks] == ["reachable", "host key"]
    assert "cp1" in failure.detail and f"127.0.0.1:{sshd.port}" in failure.detail
    assert f"it offered {new}, but {old} is pinned in {cdir / 'known_hosts'}" in failure.detail
    assert "--accept-host-key cp1" in failure.detail
    assert f"cp1 (127.0.0.1): host key: host key of cp1 (127.0.0.1:{sshd.port}) changed" in str(
        preflight.PreflightFailed([r])
    )
    # nothing was done on the host: the probe never ran, and our key was never even offered
    assert not marker.exists() and r.facts == {}
    log = sshd.log.read_text()
    assert "Accepted publickey" not in log and "Failed publickey" not in log, log
    assert (cdir / "known_hosts").read_text() == pinned_text, "the old pin is kept"
    if shutil.which("ssh"):
        refused = _openssh(sshd, cdir)
        assert refused.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr

    # the same through the command: exit 1, the finding named
    cfile = tmp_path / "cluster.yaml"
    cfile.write_text(_single_node_file(sshd))
    (tmp_path / "st" / "pf").mkdir(parents=True)
    (tmp_path / "st" / "pf" / "known_hosts").write_text(pinned_text)
    result = CliRunner().invoke(app, ["cluster", "preflight", "-f", str(cfile), "--state-dir", str(tmp_path / "st")])
    assert result.exit_code == 1 and not marker.exists()
    assert f"error: cp1 (127.0.0.1): host key: host key of cp1 (127.0.0.1:{sshd.port}) changed" in result.output


def _single_node_file(sshd: Sshd) -> str:
    return (
        "name: pf\n"
        f"ssh: {{user: root, private_key: {sshd.good_key}, port: {sshd.port}}}\n"
        "nodes:\n  - {name: cp1, address: 127.0.0.1, roles: [etcd, control-plane]}\n"
    )


def test_accept_host_key_re_pins_a_changed_key(sshd: Sshd, tmp_path: Path) -> None:
    s = cluster("127.0.0.1", sshd.port, str(sshd.good_key))
    cdir = tmp_path / "cluster"
    preflight.run(s, [s.node("cp1")], cluster_dir=cdir)
    sshd.restart(new_host_key=True)
    [r] = preflight.run(s, [s.node("cp1")], cluster_dir=cdir, accept={"cp1"})
    host_key = next(c for c in r.checks if c.name == "host key")
    assert host_key.ok and host_key.detail == f"{sshd.fingerprint()} (pinned now in known_hosts)"
    assert r.facts, "the probe ran"
    pub = Path(f"{sshd.host_key}.pub").read_text().split()
    assert (cdir / "known_hosts").read_text() == f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n", "replaced"
    [again] = preflight.run(s, [s.node("cp1")], cluster_dir=cdir)
    assert next(c for c in again.checks if c.name == "host key").detail.endswith("(matches the pinned key)")
    with pytest.raises(InputError, match="--accept-host-key: no node named w9 in the cluster file"):
        preflight.run(s, cluster_dir=cdir, accept={"w9"})


def test_accept_host_key_through_the_commands(sshd: Sshd, tmp_path: Path) -> None:
    """``cluster preflight --accept-host-key`` re-pins; ``create`` and ``scale`` hand it to
    their preflight phase."""
    cfile = tmp_path / "cluster.yaml"
    cfile.write_text(_single_node_file(sshd))
    state = tmp_path / "state"
    known_hosts = state / "pf" / "known_hosts"
    runner = CliRunner()
    args = ["cluster", "preflight", "-f", str(cfile), "--state-dir", str(state), "-o", "json"]
    runner.invoke(app, args)
    assert known_hosts.exists()
    sshd.restart(new_host_key=True)

    def host_key_check(result: Result) -> dict[str, object]:
        [report] = json.loads(result.stdout)
        return next(c for c in report["checks"] if c["name"] == "host key")

    refused = host_key_check(runner.invoke(app, args))
    assert not refused["ok"] and sshd.fingerprint() in str(refused["detail"])
    accepted = host_key_check(runner.invoke(app, [*args, "--accept-host-key", "cp1"]))
    assert accepted["ok"] and accepted["detail"] == f"{sshd.fingerprint()} (pinned now in known_hosts)"
    unknown = runner.invoke(app, [*args, "--accept-host-key", "w9"])
    assert unknown.exit_code == 2 and "--accept-host-key: no node named w9" in unknown.output

    seen: list[list[str]] = []
    real = apply.Preflight.run

    def recording(self: apply.Preflight, ctx: apply.Context) -> None:
        seen.append(ctx.accept_host_keys)
        try:
            real(self, ctx)
        except preflight.PreflightFailed:
            pass  # this machine may fail other checks (OS, ports); the host key is what is tested
        raise ProvisionerError("stop after preflight")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(apply.Preflight, "run", recording)
        for command in ("create", "scale"):
            sshd.restart(new_host_key=True)
            result = runner.invoke(
                app, ["cluster", command, "-f", str(cfile), "--state-dir", str(state), "-q", "--accept-host-key", "cp1"]
            )
            assert result.exit_code == 1 and "stop after preflight" in result.output, result.output
            assert (
                ssh.pinned(known_hosts, f"[127.0.0.1]:{sshd.port}")["ssh-ed25519"].get_base64()
                == (Path(f"{sshd.host_key}.pub").read_text().split()[1])
            ), f"{command} re-pinned"
    assert seen == [["cp1"], ["cp1"]]
