"""Benchmark: the lab. Seconds for the base image (cold, into a scratch cache), for 3
nodes up with a warm image, and for `lab down`. Target: 3 nodes up <= 60 s (warm image).

Needs root and the lab's host packages. Writes a row to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._record import record
from provisioner.lab import base_image
from provisioner.lab.manager import Lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true", help="do not time a cold base image build")
    args = parser.parse_args()
    cold = "-"
    if not args.skip_cold:
        scratch = Path(tempfile.mkdtemp(prefix="bench-image-", dir="/var/tmp"))
        try:
            _, seconds = base_image.ensure(cache=scratch)
            cold = f"{seconds:.0f}"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    base_image.ensure()  # warm
    with tempfile.TemporaryDirectory() as state:
        lab = Lab("benchlab", Path(state))
        lab.down(say=lambda m: None)  # whatever an interrupted run left
        t = time.monotonic()
        lab.up(
            nodes=3, control_planes=1, subnet="192.168.249.0/24", mirror_dir=Path("/nonexistent"), say=lambda m: None
        )
        up = time.monotonic() - t
        t = time.monotonic()
        lab.down(say=lambda m: None)
        down = time.monotonic() - t
    print(f"base image cold {cold}s, 3 nodes up {up:.1f}s (target <= 60 s), lab down {down:.1f}s")
    record(
        "lab (bench/lab.py)",
        ["base image cold s", "3 nodes up s", "lab down s", "target up"],
        [cold, f"{up:.1f}", f"{down:.1f}", "<= 60 s"],
    )


if __name__ == "__main__":
    main()
