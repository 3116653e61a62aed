"""Benchmark: `cluster create` on the lab with a warm mirror.

Wall time of create for 3 nodes (1 control plane + 2 workers), for the HA topology
(3 control planes + 1 worker) and for 12 nodes (1 + 11), of a no-op re-run, and tasks
ok / changed / skipped per host. Then, on the same lab, the physical floor
(bench/floor.py: the installed services started from a wiped state until every node is
Ready and CoreDNS answers), and each figure as a ratio to it. `--only "3 nodes, 2 subnets, vxlan"`:
the same 3 nodes on a two-subnet lab (w1 on the second bridge) with encapsulation vxlan,
cross-subnet. `--scaling`: the 3-, 6- and 12-node creates (one control plane), a straight line
fitted through them (create(n) = fixed + per_node * n) and projected to 100 and 1,000 nodes.
Targets (issue 14): 3 nodes create <= 30 s and re-run <= 8 s, HA create <= 45 s and re-run
<= 12 s, 12-node create <= 1.5x the 3-node create. Writes rows to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import floor
from bench._record import record, verdict
from provisioner.lab.manager import DEFAULT_MIRROR, Lab

# name -> nodes, control planes, subnet, second subnet (a two-subnet lab: vxlan, cross-subnet)
TOPOLOGIES: dict[str, tuple[int, int, str, str | None]] = {
    "3 nodes (1 cp + 2 w)": (3, 1, "192.168.248.0/24", None),
    "HA (3 cp + 1 w)": (4, 3, "192.168.247.0/24", None),
    "6 nodes (1 cp + 5 w)": (6, 1, "192.168.248.0/24", None),
    "12 nodes (1 cp + 11 w)": (12, 1, "192.168.248.0/24", None),
    "3 nodes, 2 subnets, vxlan": (3, 1, "192.168.248.0/24", "192.168.249.0/24"),
}
# name -> (create s, re-run s) targets of issue 14; the 12-node one is a ratio to the 3-node create
TARGETS: dict[str, tuple[float, float] | None] = {
    "3 nodes (1 cp + 2 w)": (30.0, 8.0),
    "HA (3 cp + 1 w)": (45.0, 12.0),
    "6 nodes (1 cp + 5 w)": None,
    "12 nodes (1 cp + 11 w)": None,
    "3 nodes, 2 subnets, vxlan": None,
}
TWELVE_TO_THREE = 1.5  # 12-node create / 3-node create, measured in the same run
THREE = "3 nodes (1 cp + 2 w)"
# --scaling: the one-control-plane creates whose per-node cost is fitted and projected
SCALING = {3: THREE, 6: "6 nodes (1 cp + 5 w)", 12: "12 nodes (1 cp + 11 w)"}


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
    keep_logs(state, lab.name)  # the state directory is temporary
    if proc.returncode != 0:
        sys.exit(f"create failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


LOGS = Path(__file__).resolve().parents[1] / "build" / "bench-logs"


def keep_logs(state: Path, cluster: str) -> None:
    """Copy the run logs (their slowest tasks and wall time per play) to build/bench-logs/."""
    LOGS.mkdir(parents=True, exist_ok=True)
    for log in (state / cluster / "logs").glob("*.log"):
        shutil.copy2(log, LOGS / f"{cluster}-{log.name}")


def per_host(result: dict) -> str:
    totals: dict[str, list[int]] = {}
    for run in result["results"]:
        for host, s in run["stats"].items():
            t = totals.setdefault(host, [0, 0, 0])
            t[0] += s["ok"]
            t[1] += s["changed"]
            t[2] += s["skipped"]
    return ", ".join(f"{h} {o}/{c}/{s}" for h, (o, c, s) in sorted(totals.items()))


def fit(points: dict[int, float]) -> tuple[float, float]:
    """Least squares of create time = fixed + per_node * n; returns (fixed, per_node)."""
    n = len(points)
    mx = sum(points) / n
    my = sum(points.values()) / n
    per_node = sum((x - mx) * (y - my) for x, y in points.items()) / sum((x - mx) ** 2 for x in points)
    return my - per_node * mx, per_node


def record_scaling(creates: dict[str, float]) -> None:
    points = {n: creates[name] for n, name in SCALING.items() if name in creates}
    if len(points) < 2:
        return
    fixed, per_node = fit(points)
    formula = f"create(n) = {fixed:.0f} s + {per_node:.1f} s * n"
    hundred, thousand = fixed + 100 * per_node, fixed + 1000 * per_node
    print(
        f"per-node cost: {formula}; projected 100 nodes {hundred:.0f} s, 1,000 nodes {thousand:.0f} s "
        "(this lab: every node shares the controller's 2 cores)"
    )
    record(
        "create time against the node count, fitted (bench/create.py --scaling)",
        ["measured creates s", "fit", "100 nodes (projected) s", "1,000 nodes (projected) s"],
        [
            ", ".join(f"{n} nodes {t:.0f}" for n, t in sorted(points.items())),
            formula,
            f"{hundred:.0f}",
            f"{thousand:.0f}",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(TOPOLOGIES), action="append", help="one topology (repeatable)")
    parser.add_argument(
        "--scaling", action="store_true", help="the 3-, 6- and 12-node creates, fitted and projected to 100 and 1,000"
    )
    args = parser.parse_args()
    chosen = list(SCALING.values()) if args.scaling else (args.only or list(TOPOLOGIES)[:2])
    creates: dict[str, float] = {}
    for name, (nodes, cps, subnet, second) in TOPOLOGIES.items():
        if name not in chosen:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            lab = Lab("benchc", state)
            lab.down(say=lambda m: None)  # whatever an interrupted run left
            lab.up(
                nodes=nodes,
                control_planes=cps,
                subnet=subnet,
                mirror_dir=DEFAULT_MIRROR,
                say=lambda m: None,
                second_subnet=second,
            )
            try:
                first, r1 = create(lab, state)
                again, r2 = create(lab, state)
                base = floor.measure(lab)
            finally:
                lab.down(say=lambda m: None)
        f = base["floor"]
        creates[name] = first
        target = TARGETS[name]
        if target is not None:
            against = f"create {verdict(first, target[0])} s, re-run {verdict(again, target[1])} s"
        elif name.startswith("12 nodes") and THREE in creates:
            against = f"12/3 create {verdict(first / creates[THREE], TWELVE_TO_THREE)}"
        elif name.startswith("12 nodes"):
            against = f"12/3 create <= {TWELVE_TO_THREE:g}: run it with --only '{THREE}' in the same run"
        else:
            against = f"{first / creates[THREE]:.2f}x the 3-node create" if THREE in creates else "no target"
        print(
            f"{name}: create {first:.0f}s ({first / f:.1f}x the floor), no-op re-run {again:.0f}s "
            f"({again / f:.1f}x); floor {f}s (API {base['api']}s, nodes Ready {base['nodes_ready']}s); {against}"
        )
        print(f"  first run ok/changed/skipped per host: {per_host(r1)}")
        print(f"  re-run    ok/changed/skipped per host: {per_host(r2)}")
        record(
            "cluster create on the lab, against the floor (bench/create.py)",
            [
                "topology",
                "create s",
                "no-op re-run s",
                "floor s",
                "create / floor",
                "re-run / floor",
                "first run ok/changed/skipped",
                "re-run ok/changed/skipped",
                "against the targets",
            ],
            [
                name,
                f"{first:.0f}",
                f"{again:.0f}",
                f"{f}",
                f"{first / f:.1f}",
                f"{again / f:.1f}",
                per_host(r1),
                per_host(r2),
                against,
            ],
        )
    record_scaling(creates)


if __name__ == "__main__":
    main()
