"""The one place that works out how to reach a node over SSH: user, port, key and the
cluster's pinned host keys. Ansible (inventory variables), paramiko (preflight) and
testinfra (through the Ansible inventory) all take their settings from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


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
        "ansible_python_interpreter": "/usr/bin/python3",
    }
