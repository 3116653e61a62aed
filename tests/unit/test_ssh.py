"""Unit tests of the pinned SSH host keys (provisioner.ssh): OpenSSH-style fingerprints, the
cluster's known_hosts file (0600, OpenSSH format that OpenSSH itself reads, ``[host]:port``
for other ports, a re-pinned host's line replaced and never duplicated), trust on first use
and refusal of a changed key (paramiko's policy), and the lab's per-node host keys pinned
when a node's root filesystem is made. Preflight against a real sshd: test_preflight.py."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from provisioner import spec, ssh
from provisioner.errors import ProvisionerError
from provisioner.lab import nspawn
from provisioner.lab.manager import Lab, LabNode, LabState


def keypair(tmp_path: Path, name: str = "host_key") -> tuple[paramiko.PKey, Path]:
    """A fresh ed25519 key made by ssh-keygen; returns the public key and its .pub file."""
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    pub = path.with_suffix(".pub")
    return ssh.public_key(pub.read_text()), pub


def target(tmp_path: Path, port: int = 22, name: str = "cp1", host: str = "192.0.2.11") -> ssh.SshTarget:
    s = spec.from_dict(
        {
            "name": "t",
            "ssh": {"user": "root", "private_key": str(tmp_path / "id"), "port": port},
            "nodes": [{"name": name, "address": host, "roles": ["etcd", "control-plane"]}],
        }
    )
    return ssh.target(s, s.node(name), tmp_path / "cluster")


def openssh_lookup(known_hosts: Path, name: str) -> list[str]:
    """What OpenSSH itself finds for ``name`` in the file (ssh-keygen -F), as key lines."""
    out = subprocess.run(["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line and not line.startswith("#")]


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path) -> None:
    key, pub = keypair(tmp_path)
    printed = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
    assert ssh.fingerprint(key) == printed.split()[1]
    assert ssh.fingerprint(key).startswith("SHA256:") and not ssh.fingerprint(key).endswith("=")


def test_known_hosts_names_follow_openssh() -> None:
    assert ssh.known_hosts_name("10.0.0.1") == "10.0.0.1"
    assert ssh.known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


def test_pin_writes_a_private_openssh_file_and_replaces_a_hosts_line(tmp_path: Path) -> None:
    kh = tmp_path / "cluster" / "known_hosts"
    old, _ = keypair(tmp_path, "old")
    new, _ = keypair(tmp_path, "new")
    other, _ = keypair(tmp_path, "other")
    ssh.pin(kh, "[10.0.0.1]:2222", [old])
    ssh.pin(kh, "10.0.0.2", [other])
    assert kh.stat().st_mode & 0o777 == 0o600
    assert (
        kh.read_text() == f"[10.0.0.1]:2222 ssh-ed25519 {old.get_base64()}\n10.0.0.2 ssh-ed25519 {other.get_base64()}\n"
    )
    assert openssh_lookup(kh, "[10.0.0.1]:2222") == [f"[10.0.0.1]:2222 ssh-ed25519 {old.get_base64()}"]
    assert openssh_lookup(kh, "10.0.0.1") == [], "port 22 is another host name"
    ssh.pin(kh, "[10.0.0.1]:2222", [new])  # re-pinned: replaced, not added
    ssh.pin(kh, "[10.0.0.1]:2222", [new])
    lines = kh.read_text().splitlines()
    assert sorted(lines) == sorted(
        [f"[10.0.0.1]:2222 ssh-ed25519 {new.get_base64()}", f"10.0.0.2 ssh-ed25519 {other.get_base64()}"]
    )
    assert ssh.pinned(kh, "[10.0.0.1]:2222") == {"ssh-ed25519": new}
    assert ssh.forget(kh, "[10.0.0.1]:2222") and not ssh.forget(kh, "[10.0.0.1]:2222")
    assert kh.read_text() == f"10.0.0.2 ssh-ed25519 {other.get_base64()}\n"
    assert not ssh.forget(tmp_path / "none" / "known_hosts", "x") and not (tmp_path / "none").exists()


def test_a_line_without_its_newline_is_not_joined_to_the_next(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    a, _ = keypair(tmp_path, "a")
    b, _ = keypair(tmp_path, "b")
    kh.write_text(f"10.0.0.1 ssh-ed25519 {a.get_base64()}")
    ssh.pin(kh, "10.0.0.2", [b])
    assert ssh.pinned(kh, "10.0.0.1") == {"ssh-ed25519": a} and ssh.pinned(kh, "10.0.0.2") == {"ssh-ed25519": b}


def test_first_use_pins_the_key_and_a_changed_one_is_refused(tmp_path: Path) -> None:
    t = target(tmp_path, port=2222)
    first, _ = keypair(tmp_path, "first")
    second, _ = keypair(tmp_path, "second")
    client = paramiko.SSHClient()
    policy = ssh.PinOnFirstUse(t)
    policy.missing_host_key(client, t.known_hosts_name, first)
    assert policy.recorded and t.known_hosts == tmp_path / "cluster" / "known_hosts"
    assert t.known_hosts.read_text() == f"[192.0.2.11]:2222 ssh-ed25519 {first.get_base64()}\n"
    assert t.known_hosts.stat().st_mode & 0o777 == 0o600
    again = ssh.PinOnFirstUse(t)
    again.missing_host_key(client, t.known_hosts_name, first)  # pinned meanwhile, same key
    assert not again.recorded
    with pytest.raises(ssh.HostKeyChanged) as changed:
        ssh.PinOnFirstUse(t).missing_host_key(client, t.known_hosts_name, second)
    assert isinstance(changed.value, ProvisionerError)
    assert str(changed.value) == (
        f"host key of cp1 (192.0.2.11:2222) changed: it offered {ssh.fingerprint(second)}, but "
        f"{ssh.fingerprint(first)} is pinned in {t.known_hosts}; if cp1 was re-installed, re-pin its key with "
        "--accept-host-key cp1, otherwise find out what answers at 192.0.2.11:2222"
    )
    assert ssh.pinned(t.known_hosts, t.known_hosts_name) == {"ssh-ed25519": first}, "unchanged"
    replace = ssh.PinOnFirstUse(t, replace=True)
    replace.missing_host_key(client, t.known_hosts_name, second)
    assert replace.recorded
    assert t.known_hosts.read_text() == f"[192.0.2.11]:2222 ssh-ed25519 {second.get_base64()}\n"


def test_the_client_asks_for_the_pinned_key_only(tmp_path: Path) -> None:
    t = target(tmp_path)
    key, _ = keypair(tmp_path)
    client, _ = ssh.pinned_client(t)
    assert client.get_host_keys().lookup(t.known_hosts_name) is None, "nothing pinned yet"
    ssh.pin(t.known_hosts, t.known_hosts_name, [key])
    client, policy = ssh.pinned_client(t)
    assert dict(client.get_host_keys().lookup(t.known_hosts_name) or {}) == {"ssh-ed25519": key}
    assert not policy.replace
    client, policy = ssh.pinned_client(t, replace=True)
    assert client.get_host_keys().lookup(t.known_hosts_name) is None and policy.replace


def test_hosts_pinned_at_once_are_all_kept(tmp_path: Path) -> None:
    """Preflight checks hosts in parallel threads: no pin may be lost to another's write."""
    keys = [keypair(tmp_path, f"k{i}")[0] for i in range(12)]
    targets = [target(tmp_path, name=f"n{i}", host=f"10.0.0.{i}") for i in range(12)]
    threads = [
        threading.Thread(target=ssh.PinOnFirstUse(t).missing_host_key, args=(None, t.known_hosts_name, k))
        for t, k in zip(targets, keys, strict=True)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t, k in zip(targets, keys, strict=True):
        assert ssh.pinned(t.known_hosts, t.known_hosts_name) == {"ssh-ed25519": k}
    assert len(targets[0].known_hosts.read_text().splitlines()) == 12


def test_ansible_trusts_only_the_clusters_known_hosts(tmp_path: Path) -> None:
    args = ssh.ansible_common_args(tmp_path)
    assert f"-o UserKnownHostsFile={tmp_path / 'known_hosts'}" in args
    assert "-o StrictHostKeyChecking=yes" in args and "-o GlobalKnownHostsFile=/dev/null" in args


# -- the lab: every node its own host key, pinned when it is made --------------------------


def _base(tmp_path: Path) -> tuple[Path, paramiko.PKey]:
    """A stand-in base image with just what make_rootfs writes into, and a host key of its own
    (as a base image built without stripping its keys would have)."""
    base = tmp_path / "base"
    for d in ("etc/ssh", "etc/systemd/network", "etc/systemd/system", "etc/apt/apt.conf.d", "usr/local/sbin", "root"):
        (base / d).mkdir(parents=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "etc/ssh/ssh_host_ed25519_key")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(base / "etc/ssh/ssh_host_ecdsa_key")], check=True
    )
    return base, ssh.public_key((base / "etc/ssh/ssh_host_ed25519_key.pub").read_text())


def test_each_lab_node_gets_its_own_host_key_pinned_in_the_labs_known_hosts(tmp_path: Path) -> None:
    base, shared = _base(tmp_path)
    lab = Lab("hk", tmp_path / "state", root=tmp_path / "roots")
    st = LabState("hk", "192.168.250.0/24", "pvl-hk", [LabNode("cp1", "192.168.250.11", ["control-plane"])])
    st.nodes.append(LabNode("w1", "192.168.250.21", ["worker"]))
    specs = [lab._node_spec(st, n, "http://192.168.250.1:3142", "ssh-ed25519 AAAA lab") for n in st.nodes]
    for s in specs:
        nspawn.make_rootfs(s, base)
    lab.pin_host_keys(specs)
    assert lab.known_hosts == lab.cluster.root / "known_hosts" == lab.cluster_file.with_name("known_hosts")
    keys = {}
    for s in specs:
        assert sorted(p.name for p in (s.rootfs / "etc/ssh").glob("ssh_host_*")) == [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
        ], "only the node's own key; none copied from the base image"
        [line] = nspawn.host_public_keys(s)
        assert line.endswith(f" root@{s.name}")
        keys[s.name] = ssh.public_key(line)
        assert ssh.pinned(lab.known_hosts, s.ip) == {"ssh-ed25519": keys[s.name]}
        assert openssh_lookup(lab.known_hosts, s.ip) == [f"{s.ip} ssh-ed25519 {keys[s.name].get_base64()}"]
    assert len({k.get_base64() for k in keys.values()} | {shared.get_base64()}) == 3, "no two nodes share a key"
    assert lab.known_hosts.stat().st_mode & 0o777 == 0o600

    # w1 made again under the same name: a new key, whose line replaces the old one
    subprocess.run(["rm", "-rf", str(specs[1].rootfs)], check=True)
    nspawn.make_rootfs(specs[1], base)
    lab.pin_host_keys(specs)
    [line] = nspawn.host_public_keys(specs[1])
    assert ssh.public_key(line) != keys["w1"]
    assert ssh.pinned(lab.known_hosts, specs[1].ip) == {"ssh-ed25519": ssh.public_key(line)}
    assert ssh.pinned(lab.known_hosts, specs[0].ip) == {"ssh-ed25519": keys["cp1"]}, "cp1 kept its key"
    assert len(lab.known_hosts.read_text().splitlines()) == 2, "one line per node, none duplicated"
