"""Unit test of the packaging: the wheel carries everything the tool runs, so that a
non-editable install works (the e2e suite creates a cluster from such an install)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_playbooks_roles_checks_and_go_pins(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("provisioner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    pkg = ROOT / "provisioner"
    shipped = [
        p.relative_to(ROOT).as_posix()
        for sub in ("playbooks", "checks", "mirror/go")
        for p in (pkg / sub).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert shipped and not [f for f in shipped if f not in names], "files missing from the wheel"
    for must in (
        "provisioner/playbooks/cluster.yml",
        "provisioner/playbooks/facts.yml",
        "provisioner/playbooks/roles/etcd/tasks/main.yml",
        "provisioner/checks/test_node.py",
        "provisioner/mirror/go/kubernetes-1.37/go.mod",
        "provisioner/mirror/go/pause/main.go",
    ):
        assert must in names, must
