"""Benchmark: `cluster create` on the lab with a warm mirror.

Wall time of create for 3 nodes (1 control plane + 2 workers) and for the HA topology
(3 control planes + 1 worker), of a no-op re-run, and tasks ok / changed / skipped per
host. Targets: create <= 180 s, no-op re-run <= 30 s. Writes rows to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._record import record
from provisioner.lab.manager import DEFAULT_MIRROR, Lab

TOPOLOGIES = {"3 nodes (1 cp + 2 w)": (3, 1, "192.168.248.0/24"), "HA (3 cp + 1 w)": (4, 3, "192.168.247.0/24")}


def create(lab: Lab, state: Path) -> tuple[float, dict]:
    t = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioner.cli",
            "cluster",
            "create",
            "-f",
            str(lab.cluster_file),
            "--state-dir",
            str(state),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - t
    if proc.returncode != 0:
        sys.exit(f"create failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def per_host(result: dict) -> str:
    totals: dict[str, list[int]] = {}
    for run in result["results"]:
        for host, s in run["stats"].items():
            t = totals.setdefault(host, [0, 0, 0])
            t[0] += s["ok"]
            t[1] += s["changed"]
            t[2] += s["skipped"]
    return ", ".join(f"{h} {o}/{c}/{s}" for h, (o, c, s) in sorted(totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(TOPOLOGIES), help="one topology")
    args = parser.parse_args()
    for name, (nodes, cps, subnet) in TOPOLOGIES.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            lab = Lab("benchc", state)
            lab.down(say=lambda m: None)  # whatever an interrupted run left
            lab.up(nodes=nodes, control_planes=cps, subnet=subnet, mirror_dir=DEFAULT_MIRROR, say=lambda m: None)
            try:
                first, r1 = create(lab, state)
                again, r2 = create(lab, state)
            finally:
                lab.down(say=lambda m: None)
        print(f"{name}: create {first:.0f}s, no-op re-run {again:.0f}s")
        print(f"  first run ok/changed/skipped per host: {per_host(r1)}")
        print(f"  re-run    ok/changed/skipped per host: {per_host(r2)}")
        record(
            "cluster create on the lab (bench/create.py)",
            [
                "topology",
                "create s",
                "no-op re-run s",
                "first run ok/changed/skipped",
                "re-run ok/changed/skipped",
                "targets",
            ],
            [name, f"{first:.0f}", f"{again:.0f}", per_host(r1), per_host(r2), "create <= 180 s, re-run <= 30 s"],
        )


if __name__ == "__main__":
    main()
