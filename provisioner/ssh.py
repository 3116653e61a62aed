"""The one place that works out how to reach a node over SSH: user, port, key and the
cluster's pinned host keys. Ansible (inventory variables), paramiko (preflight) and
testinfra (through the Ansible inventory) all take their settings from here.

paramiko is imported only by the functions that use it: the inventory (defaults.py) needs
only the Ansible variables, and `cluster plan` must not pay for paramiko (issue 14).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.errors import ProvisionerError

if TYPE_CHECKING:
    import paramiko

    from provisioner.spec import ClusterSpec, Node

KNOWN_HOSTS = "known_hosts"


@dataclass(frozen=True)
class SshTarget:
    name: str
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH and paramiko name this host in known_hosts."""
        return known_hosts_name(self.host, self.port)


def known_hosts_name(host: str, port: int = 22) -> str:
    """``host`` on port 22, ``[host]:port`` on any other (as OpenSSH and paramiko write it)."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_file(cluster_dir: Path) -> Path:
    return cluster_dir / KNOWN_HOSTS


def key_file(spec: ClusterSpec) -> Path:
    return Path(spec.ssh.private_key).expanduser()


def target(spec: ClusterSpec, node: Node, cluster_dir: Path) -> SshTarget:
    return SshTarget(
        name=node.name,
        host=node.address,
        port=node.ssh_port or spec.ssh.port,
        user=node.ssh_user or spec.ssh.user,
        key_file=key_file(spec),
        known_hosts=known_hosts_file(cluster_dir),
    )


# -- the private key -----------------------------------------------------------------------


class KeyProblem(ProvisionerError):
    """The private key cannot open any node as it is (missing, open to others, encrypted
    with no agent to hold it, not a key)."""


@dataclass(frozen=True)
class KeyFile:
    path: Path
    encrypted: bool = False  # it has a passphrase: logins go through ssh-agent


def agent_keys() -> int:
    """How many keys the ssh-agent of SSH_AUTH_SOCK holds (0 without an agent)."""
    import paramiko

    if not os.environ.get("SSH_AUTH_SOCK"):
        return 0
    agent = paramiko.Agent()
    try:
        return len(agent.get_keys())
    finally:
        agent.close()


def check_key(path: Path) -> KeyFile:
    """The key file as ssh (Ansible's transport) will need it, or KeyProblem saying what to do:
    present, readable, not open to other users (ssh refuses such a key), and either without
    a passphrase or held by an ssh-agent (nobody is there to type the passphrase)."""
    import paramiko

    where = f"ssh.private_key: {path}"
    if not path.exists():
        raise KeyProblem(f"{where} does not exist; give the private key that opens the nodes")
    if not path.is_file():
        raise KeyProblem(f"{where} is not a file; give the private key that opens the nodes")
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        raise KeyProblem(
            f"{where} is mode {st.st_mode & 0o777:04o}, open to other users, and ssh refuses such a key; "
            f"chmod 600 {path}"
        )
    try:
        paramiko.PKey.from_path(path)
    except PermissionError as exc:
        raise KeyProblem(f"{where} cannot be read: {exc.strerror}") from None
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        # (cryptography, under paramiko, says "password" in a TypeError for OpenSSH and PEM keys)
        if isinstance(exc, TypeError) and "password" not in str(exc).lower():
            raise
        if agent_keys() == 0:
            state = (
                "no ssh-agent runs (SSH_AUTH_SOCK is unset)"
                if not os.environ.get("SSH_AUTH_SOCK")
                else "the ssh-agent holds no key"
            )
            raise KeyProblem(
                f"{where} is encrypted (it has a passphrase) and {state}; load it with `ssh-add {path}`, "
                "or use a key without a passphrase"
            ) from None
        return KeyFile(path, encrypted=True)
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise KeyProblem(f"{where} is not a private key ssh can use: {exc}") from None
    return KeyFile(path)


def ansible_common_args(cluster_dir: Path) -> str:
    """OpenSSH options for Ansible (and testinfra's Ansible backend): only the cluster's
    pinned keys are trusted; an unknown or changed key is refused."""
    return (
        f"-o UserKnownHostsFile={known_hosts_file(cluster_dir)} -o StrictHostKeyChecking=yes "
        "-o GlobalKnownHostsFile=/dev/null"
    )


def ansible_vars(spec: ClusterSpec, cluster_dir: Path) -> dict[str, object]:
    """Connection variables for group_vars/all (per-node user/port go in host vars)."""
    return {
        "ansible_user": spec.ssh.user,
        "ansible_port": spec.ssh.port,
        "ansible_ssh_private_key_file": str(key_file(spec)),
        "ansible_ssh_common_args": ansible_common_args(cluster_dir),
        # mitogen and Ansible's ssh plugin both check host keys only when this is on
        "ansible_host_key_checking": True,
        "ansible_python_interpreter": "/usr/bin/python3",
    }


# -- pinned host keys (trust on first use) ---------------------------------------------------


class HostKeyChanged(ProvisionerError):
    """A node answered with a key other than the one pinned for it: nothing is done there."""

    def __init__(self, t: SshTarget, pinned: list[str], offered: str):
        self.node, self.pinned, self.offered = t.name, pinned, offered
        where = f"{t.host}:{t.port}"
        super().__init__(
            f"host key of {t.name} ({where}) changed: it offered {offered}, but {' or '.join(pinned)} is pinned "
            f"in {t.known_hosts}; if {t.name} was re-installed, re-pin its key with --accept-host-key {t.name}, "
            f"otherwise find out what answers at {where}"
        )


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it (``SHA256:`` + base64, no padding)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def public_key(line: str) -> paramiko.PKey:
    """A public key line (``ssh-ed25519 AAAA... comment``, as in ``*.pub``) as a paramiko key."""
    import paramiko

    kind, data = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


_threads = threading.Lock()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the known_hosts file (created 0600 if missing) against other threads and processes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with _threads:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
    finally:
        os.close(fd)


def _load(path: Path) -> paramiko.HostKeys:
    import paramiko

    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    return keys


def _drop(keys: paramiko.HostKeys, name: str) -> bool:
    dropped = False
    while keys.lookup(name) is not None:
        del keys[name]
        dropped = True
    return dropped


def _append(path: Path, name: str, keys: Iterable[paramiko.PKey]) -> None:
    import paramiko

    text = path.read_bytes()
    with open(path, "a") as f:
        if text and not text.endswith(b"\n"):
            f.write("\n")
        for key in keys:
            f.write(paramiko.hostkeys.HostKeyEntry([name], key).to_line() or "")


def pinned(known_hosts: Path, name: str) -> dict[str, paramiko.PKey]:
    """The keys pinned for ``name`` (a known_hosts name): key type -> key; empty if none."""
    return dict(_load(known_hosts).lookup(name) or {})


def pin(known_hosts: Path, name: str, keys: Iterable[paramiko.PKey]) -> None:
    """Pin exactly these keys for ``name``, replacing whatever was pinned for it."""
    keys = list(keys)
    with _locked(known_hosts):
        current = _load(known_hosts)
        if _drop(current, name):
            current.save(str(known_hosts))
        _append(known_hosts, name, keys)


def forget(known_hosts: Path, name: str) -> bool:
    """Drop every key pinned for ``name``; True if there was one."""
    if not known_hosts.exists():
        return False
    with _locked(known_hosts):
        current = _load(known_hosts)
        if not _drop(current, name):
            return False
        current.save(str(known_hosts))
        return True


class PinOnFirstUse:
    """Record the key of a host that has none pinned yet (trust on first use); refuse a key
    that differs from one pinned meanwhile. ``replace`` (re-pin) records the offered key in
    place of any pinned one. ``recorded`` says whether this policy wrote the key.

    paramiko's MissingHostKeyPolicy interface (``missing_host_key``), not a subclass of it,
    so that this module imports without paramiko; SSHClient only calls the method."""

    def __init__(self, t: SshTarget, replace: bool = False):
        self.target = t
        self.replace = replace
        self.recorded = False

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with _locked(self.target.known_hosts):
            current = _load(self.target.known_hosts)
            known = current.lookup(hostname) or {}
            if known.get(key.get_name()) == key:
                return
            if known and not self.replace:
                raise HostKeyChanged(self.target, [fingerprint(k) for k in known.values()], fingerprint(key))
            if _drop(current, hostname):
                current.save(str(self.target.known_hosts))
            _append(self.target.known_hosts, hostname, [key])
            self.recorded = True


def pinned_client(t: SshTarget, replace: bool = False) -> tuple[paramiko.SSHClient, PinOnFirstUse]:
    """A client that trusts only the host key pinned for ``t`` in the cluster's known_hosts
    (and pins the key on first contact); ``replace`` re-pins whatever key ``t`` offers."""
    import paramiko

    client = paramiko.SSHClient()
    policy = PinOnFirstUse(t, replace=replace)
    if not replace:
        # Loaded into the client, so that paramiko asks for the pinned key's type first.
        for host_key in pinned(t.known_hosts, t.known_hosts_name).values():
            client.get_host_keys().add(t.known_hosts_name, host_key.get_name(), host_key)
    client.set_missing_host_key_policy(policy)
    return client, policy


def connect(client: paramiko.SSHClient, t: SshTarget, agent: bool = False, **kwargs: Any) -> None:
    """Connect a ``pinned_client`` to ``t`` with the cluster's key (``agent``: with the keys of
    ssh-agent instead, for an encrypted key file). The host key is checked before
    authentication: a changed one raises HostKeyChanged and nothing is sent to the host.
    ``kwargs`` go to paramiko's connect (sock, timeouts). The caller closes the client."""
    import paramiko

    try:
        client.connect(
            t.host,
            port=t.port,
            username=t.user,
            key_filename=None if agent else str(t.key_file),
            allow_agent=agent,
            look_for_keys=False,
            **kwargs,
        )
    except paramiko.BadHostKeyException as exc:
        known = [fingerprint(k) for k in pinned(t.known_hosts, t.known_hosts_name).values()]
        raise HostKeyChanged(t, known or [fingerprint(exc.expected_key)], fingerprint(exc.key)) from None
