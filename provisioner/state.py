"""The cluster directory: everything provisioner keeps about one cluster.

``./clusters/<name>/`` by default (``--state-dir`` changes the parent), mode 0700::

    cluster.yaml        copy of the spec last applied (written by create/scale)
    pod-blocks.yaml     node -> pod block; stable, never renumbered
    inventory/          hosts.yaml + group_vars/ (generated, readable)
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
    def applied_file(self) -> Path:
        return self.root / "applied-nodes.yaml"

    def read_applied(self) -> dict[str, dict[str, object]]:
        """The nodes as the last successful create/scale left them: name -> address, roles."""
        if not self.applied_file.exists():
            return {}
        return yamlio.load(self.applied_file.read_text()) or {}

    def write_applied(self, nodes: dict[str, dict[str, object]]) -> None:
        self.ensure()
        header = "# The nodes as the last successful create or scale left them (scale adds the others).\n"
        self.applied_file.write_text(header + yamlio.dump(nodes))

    @property
    def version_file(self) -> Path:
        return self.root / "kubernetes-version"

    def read_version(self) -> str | None:
        """The Kubernetes version the cluster runs, as the last create/scale/upgrade left it."""
        return self.version_file.read_text().strip() if self.version_file.exists() else None

    def write_version(self, version: str) -> None:
        self.ensure()
        self.version_file.write_text(version + "\n")

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
