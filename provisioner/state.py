"""The cluster directory: what provisioner keeps about one cluster on the controller.
The truth about the cluster lives on the nodes (facts.py); what is here is the PKI, the
generated inventory and config, logs, snapshots and caches.

``./clusters/<name>/`` by default (``--state-dir`` changes the parent), mode 0700::

    pod-blocks.yaml     node -> pod block: a cache of what the nodes carry (facts win)
    inventory/          hosts.yaml + group_vars/all.yml (generated, readable, complete)
    ansible.cfg         every Ansible setting (generated): plain ansible-playbook uses it
    known_hosts         the nodes' SSH host keys, pinned at first contact
    facts-cache/        Ansible's fact cache between runs
    pki/                CAs and certificates (created once, never regenerated)
    admin.kubeconfig    written by create (0600)
    backups/            etcd snapshots taken before upgrade/reset
    logs/               <timestamp>-<command>.log, full ansible output
    runner/             ansible-runner's private data dir
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner import yamlio

DEFAULT_PARENT = Path("clusters")


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class ClusterDir:
    root: Path

    @classmethod
    def for_cluster(cls, name: str, parent: Path | str | None = None) -> ClusterDir:
        return cls(Path(parent or DEFAULT_PARENT).expanduser().absolute() / name)

    def ensure(self) -> ClusterDir:
        _private_dir(self.root)
        return self

    # -- well-known places ------------------------------------------------------------
    @property
    def inventory(self) -> Path:
        return self.root / "inventory"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def runner(self) -> Path:
        return self.root / "runner"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def blocks_file(self) -> Path:
        return self.root / "pod-blocks.yaml"

    def new_log(self, command: str) -> Path:
        _private_dir(self.logs)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.logs / f"{stamp}-{command}.log"

    @property
    def ansible_cfg(self) -> Path:
        return self.root / "ansible.cfg"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    # -- pod block assignments ------------------------------------------------------------
    def read_blocks(self) -> dict[str, str]:
        if not self.blocks_file.exists():
            return {}
        data = yamlio.load(self.blocks_file.read_text()) or {}
        return {str(k): str(v) for k, v in data.items()}

    def write_blocks(self, blocks: dict[str, str]) -> None:
        self.ensure()
        header = (
            "# Pod block of each node, assigned once by provisioner and never renumbered.\n"
            "# Removing a node frees its block; adding one takes the lowest free block.\n"
        )
        self.blocks_file.write_text(header + yamlio.dump(blocks))
