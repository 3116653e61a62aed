"""Benchmark: the physical floor of a create, on the same lab and in the same run.

What no tool can beat: with the binaries, configuration, certificates and container images
already on the nodes, start every service at once (from a wiped state: no etcd data, no
pods) and wait until every node is Ready and CoreDNS answers a query. Measured on the
nodes' own clock (the lab's nodes share the host's), from the first service start to the
DNS answer; the Ansible plays around it are not counted.

``measure(lab)`` is what bench/create.py calls after its create and no-op runs, to print
each figure as a ratio to the floor; run alone, this script brings up a lab, creates, and
measures the floor of that topology.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._record import record
from provisioner.lab.manager import DEFAULT_MIRROR, Lab

PLAYBOOK = Path(__file__).with_name("floor") / "floor.yml"
TOPOLOGIES = {"3 nodes (1 cp + 2 w)": (3, 1), "HA (3 cp + 1 w)": (4, 3)}


def measure(lab: Lab) -> dict[str, float]:
    """Stop and wipe the created cluster on ``lab``, start it from its installed binaries,
    and return the seconds from the first start to: the API answering, every node Ready,
    CoreDNS answering (``floor``)."""
    from provisioner.runner import run_playbook

    outputs: dict[str, dict[str, dict]] = {"start": {}, "wait": {}}

    def on_event(event: dict) -> None:
        data = event.get("event_data", {})
        task = str(data.get("task", ""))
        if event.get("event") == "runner_on_ok" and task.startswith("Floor | ") and task.endswith(", report"):
            stdout = data.get("res", {}).get("stdout", "").strip().splitlines()
            outputs["start" if "start" in task else "wait"][data.get("host", "?")] = json.loads(stdout[-1])

    with tempfile.TemporaryDirectory() as tmp:
        result = run_playbook(
            PLAYBOOK,
            lab.cluster.root / "inventory",
            Path(tmp),
            config=lab.cluster.root / "ansible.cfg",
            on_event=on_event,
        )
    if not result.ok or not outputs["wait"]:
        sys.exit(f"floor playbook failed: {[f'{f.host}: {f.task}: {f.message}' for f in result.failures]}")
    t0 = min(s["started"] for s in outputs["start"].values())
    marks = next(iter(outputs["wait"].values()))
    return {
        "api": round(marks["api"] - t0, 1),
        "nodes_ready": round(marks["nodes_ready"] - t0, 1),
        "floor": round(marks["dns"] - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(TOPOLOGIES), default="3 nodes (1 cp + 2 w)")
    args = parser.parse_args()
    from bench import create as create_bench  # bench/create.py imports this module

    nodes, cps = TOPOLOGIES[args.only]
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab("benchf", Path(tmp))
        lab.down(say=lambda m: None)
        lab.up(
            nodes=nodes, control_planes=cps, subnet="192.168.249.0/24", mirror_dir=DEFAULT_MIRROR, say=lambda m: None
        )
        try:
            created, _ = create_bench.create(lab, Path(tmp))
            floor = measure(lab)
        finally:
            lab.down(say=lambda m: None)
    print(
        f"{args.only}: create {created:.0f}s; floor {floor['floor']}s "
        f"(API {floor['api']}s, nodes Ready {floor['nodes_ready']}s)"
    )
    record(
        "create floor on the lab (bench/floor.py)",
        [
            "topology",
            "floor s (first start -> CoreDNS answers)",
            "API answers s",
            "all nodes Ready s",
            "create s",
            "create / floor",
        ],
        [
            args.only,
            f"{floor['floor']}",
            f"{floor['api']}",
            f"{floor['nodes_ready']}",
            f"{created:.0f}",
            f"{created / floor['floor']:.1f}",
        ],
    )


if __name__ == "__main__":
    main()
