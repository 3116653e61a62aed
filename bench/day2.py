"""Benchmark: day-2 on the lab with a warm mirror.

+1 worker on a 3-node and on a 9-node cluster (issue 14's targets: <= 20 s each, and the
9-node time <= 1.1x the 3-node time: each extra worker must cost a fixed, small amount), a
3-node minor upgrade from the older to the newer supported version (target <= 60 s), and
reset. Prints each figure beside its target and writes a row to BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._record import record, verdict
from provisioner.lab.manager import DEFAULT_MIRROR, Lab
from provisioner.versions import SUPPORTED_KUBERNETES


def cli(*args: str) -> tuple[float, dict]:
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", *args, "--output", "json"], capture_output=True, text=True
    )
    elapsed = time.monotonic() - t
    if proc.returncode != 0:
        sys.exit(f"provisioner {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def changed_on(result: dict, hosts: list[str]) -> int:
    return sum(s["changed"] for r in result["results"] for h, s in r["stats"].items() if h in hosts)


def scale_once(workers: int, subnet: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab("benchs", Path(tmp))
        lab.down(say=lambda m: None)  # whatever an interrupted run left
        lab.up(nodes=workers + 1, control_planes=1, subnet=subnet, mirror_dir=DEFAULT_MIRROR, say=lambda m: None)
        try:
            args = ["-f", str(lab.cluster_file), "--state-dir", tmp]
            cli("cluster", "create", *args)
            existing = [n.name for n in lab.state().nodes]  # type: ignore[union-attr]
            lab.up(nodes=workers + 2, control_planes=1, mirror_dir=DEFAULT_MIRROR, say=lambda m: None)
            seconds, result = cli("cluster", "scale", *args)
            return seconds, changed_on(result, existing)
        finally:
            lab.down(say=lambda m: None)


def upgrade_and_reset(subnet: str) -> tuple[float, float]:
    old, new = SUPPORTED_KUBERNETES[-2], SUPPORTED_KUBERNETES[-1]
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab("benchu", Path(tmp))
        lab.down(say=lambda m: None)  # whatever an interrupted run left
        lab.up(nodes=3, control_planes=1, subnet=subnet, mirror_dir=DEFAULT_MIRROR, say=lambda m: None)
        try:
            spec = yaml.safe_load(lab.cluster_file.read_text())
            spec["kubernetes"]["version"] = old
            lab.cluster_file.write_text(yaml.safe_dump(spec))
            args = ["-f", str(lab.cluster_file), "--state-dir", tmp]
            cli("cluster", "create", *args)
            up, _ = cli("cluster", "upgrade", *args, "--to", new)
            reset, _ = cli("cluster", "reset", *args, "--yes")
            return up, reset
        finally:
            lab.down(say=lambda m: None)


TARGETS = {"scale": 20.0, "ratio": 1.1, "upgrade": 60.0}


def main() -> None:
    s3, c3 = scale_once(2, "192.168.241.0/24")
    s9, c9 = scale_once(8, "192.168.240.0/24")
    ratio = s9 / s3
    print(f"+1 worker on 3 nodes: {verdict(s3, TARGETS['scale'])} s ({c3} changed tasks on the existing nodes)")
    print(f"+1 worker on 9 nodes: {verdict(s9, TARGETS['scale'])} s ({c9} changed)")
    print(f"9-node / 3-node: {verdict(ratio, TARGETS['ratio'])}")
    up, reset = upgrade_and_reset("192.168.239.0/24")
    print(f"3-node minor upgrade: {verdict(up, TARGETS['upgrade'])} s; reset {reset:.0f} s")
    record(
        "day-2 on the lab: +1 worker on 3 and 9 nodes, upgrade (bench/day2.py)",
        [
            "+1 worker on 3 nodes s",
            "+1 worker on 9 nodes s",
            "9/3 ratio",
            "changed on existing (3 / 9)",
            "3-node upgrade s",
            "reset s",
            "targets",
        ],
        [
            f"{s3:.0f}",
            f"{s9:.0f}",
            f"{ratio:.2f}",
            f"{c3} / {c9}",
            f"{up:.0f}",
            f"{reset:.0f}",
            f"scale <= {TARGETS['scale']:g} s, ratio <= {TARGETS['ratio']:g}, upgrade <= {TARGETS['upgrade']:g} s",
        ],
    )


if __name__ == "__main__":
    main()
