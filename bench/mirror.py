"""Benchmark: building the offline mirror, per component, and its size.

Warm (default): Go module and build caches in /var/cache/provisioner are kept, the mirror
is built into a scratch directory (so that no component is skipped by its stamp): this is
what a rebuild costs on a machine that has built once. ``--cold`` also starts from empty
Go caches (scratch, removed afterwards): the first build on a fresh machine, about 30
minutes on 2 cores. Writes a row to BENCHMARKS.md.
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
from provisioner.lab.host import CACHE_ROOT
from provisioner.mirror.build import Builder
from provisioner.versions import SUPPORTED_KUBERNETES


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also start from empty Go caches (long)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=CACHE_ROOT) as tmp:
        scratch = Path(tmp)
        cache = scratch / "cache" if args.cold else CACHE_ROOT
        if args.cold:
            # the Debian packages are downloaded, not built: keep them out of the measure
            (cache / "debs").parent.mkdir(parents=True, exist_ok=True)
            if (CACHE_ROOT / "debs").exists():
                shutil.copytree(CACHE_ROOT / "debs", cache / "debs")
        builder = Builder(mirror=scratch / "mirror", cache=cache, say=lambda m: print(m, flush=True))
        started = time.monotonic()
        manifest = builder.build(list(SUPPORTED_KUBERNETES))
        total = time.monotonic() - started
        size = size_mb(scratch / "mirror")
    kind = "cold" if args.cold else "warm"
    parts = ", ".join(f"{k} {v:.0f}s" for k, v in builder.timings.items())
    print(f"{kind} build {total:.0f}s: {parts}; {len(manifest.artifacts)} artifacts, {size:.0f} MB")
    record(
        "mirror build (bench/mirror.py)",
        ["caches", "total s", "per component s", "artifacts", "size MB"],
        [kind, f"{total:.0f}", parts, str(len(manifest.artifacts)), f"{size:.0f}"],
    )


if __name__ == "__main__":
    main()
