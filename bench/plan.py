"""Benchmark: `cluster plan` and inventory generation for a 1,000-node cluster file, in
process (target: each <= 1 s), and `provisioner cluster plan -f FILE -o json` as a whole CLI
process, as a user runs it: interpreter start, imports, plan, JSON out (target <= 0.5 s),
with `provisioner --version` beside it. Prints the seconds and writes a row per table to
BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._record import record
from provisioner import inventory, spec
from provisioner.plan import make_plan


def cluster_file(n: int) -> str:
    nodes = [{"name": f"cp{i}", "address": f"10.10.0.{i}", "roles": ["etcd", "control-plane"]} for i in (1, 2, 3)]
    for i in range(n - 3):
        nodes.append(
            {
                "name": f"w{i:04d}",
                "address": f"10.20.{i // 250}.{i % 250 + 1}",
                "roles": ["worker"],
                "labels": {"rack": f"r{i // 40}"},
            }
        )
    data = {
        "name": "big",
        "network": {"pod_subnet": "10.128.0.0/12", "service_subnet": "10.96.0.0/16", "node_prefix": 24},
        "nodes": nodes,
    }
    return yaml.safe_dump(data)


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def median_of(runs: int, argv: list[str]) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def provisioner_command() -> list[str]:
    """The installed console script beside this interpreter (what a user runs), else -m."""
    script = Path(sys.executable).parent / "provisioner"
    return [str(script)] if script.exists() else [sys.executable, "-m", "provisioner.cli"]


def main() -> None:
    n = 1000
    text = cluster_file(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(text)

        def plan() -> None:
            make_plan(spec.load(path), {})

        def generate() -> None:
            s = spec.load(path)
            blocks = inventory.assign_pod_blocks(s, {})
            inventory.write(inventory.build(s, blocks, Path(tmp)), Path(tmp) / "inv")

        t_plan = best_of(3, plan)
        t_inv = best_of(3, generate)
        cli = provisioner_command()
        plan_argv = [*cli, "cluster", "plan", "-f", str(path), "--state-dir", str(Path(tmp) / "state"), "-o", "json"]
        t_process = median_of(5, plan_argv)
        t_version = median_of(5, [*cli, "--version"])
    print(f"{n} nodes: cluster plan {t_plan:.3f}s, inventory generate {t_inv:.3f}s (target <= 1 s each)")
    print(f"{n} nodes: `provisioner cluster plan -o json` process {t_process:.3f}s (target <= 0.5 s)")
    print(f"`provisioner --version` process {t_version:.3f}s")
    record(
        "cluster plan, 1,000 nodes (bench/plan.py)",
        ["nodes", "plan s", "inventory s", "target"],
        [str(n), f"{t_plan:.3f}", f"{t_inv:.3f}", "<= 1 s"],
    )
    record(
        "provisioner cluster plan as a whole CLI process, 1,000 nodes (bench/plan.py)",
        ["nodes", "plan -o json process s (median of 5)", "--version process s (median of 5)", "target"],
        [str(n), f"{t_process:.3f}", f"{t_version:.3f}", "plan <= 0.5 s"],
    )


if __name__ == "__main__":
    main()
