"""What people see: the live timeline while the experiment runs, the table of the measurements
against the hypothesis at the end, and with ``--report DIR`` a JSON file and a PNG timeline
(matplotlib: API and canary availability over time, the injection, the end of the fault,
the detection and the recovery marked)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from provisioner.chaos.hypothesis import Check
from provisioner.chaos.timeline import Sample, Timeline

SERIES = {  # name -> label, in the order they are drawn
    "api": "API (admin kubeconfig endpoint)",
    "canary": "canary Service, in the cluster",
    "canary-api": "canary Service, through the API",
    "canary-ready": "canary fully Ready",
}
MARKS = {  # event kind -> (label, colour)
    "inject": ("fault injected", "tab:red"),
    "fault-end": ("fault undone", "tab:orange"),
    "detected": ("detected", "tab:purple"),
    "recovered": ("recovered", "tab:green"),
}


def _strip(samples: list[Sample], width: int) -> Text:
    text = Text()
    for s in samples[-width:]:
        text.append("█" if s.ok else "▁", style="green" if s.ok else "bold red")
    return text


class LiveView:
    """A rich renderable of the run so far; ``state`` supplies phase, nodes and canary counts."""

    def __init__(self, title: str, timeline: Timeline, state: Callable[[], dict[str, Any]], width: int = 60):
        self.title = title
        self.timeline = timeline
        self.state = state
        self.width = width

    def __rich__(self) -> Group:
        st = self.state()
        origin = st.get("injected") or st.get("started") or time.time()
        head = Text.assemble(
            (self.title, "bold"),
            f"  t={time.time() - origin:+6.1f}s  ",
            (st.get("phase", ""), "cyan"),
        )
        table = Table(box=None, padding=(0, 1), show_edge=False)
        table.add_column("probe")
        table.add_column(f"last {self.width // 2} s", no_wrap=True)
        table.add_column("ok", justify="right")
        for name, label in SERIES.items():
            samples = list(self.timeline.series.get(name, []))
            ok = f"{100 * sum(s.ok for s in samples) / len(samples):.0f}%" if samples else "-"
            table.add_row(label, _strip(samples, self.width), ok)
        nodes = Text("nodes: ")
        for name, ready in sorted(st.get("nodes", {}).items()):
            nodes.append(f"{name} ", style="green" if ready else "bold red")
        ready, wanted = st.get("canary", (0, 0))
        nodes.append(f"  canary {ready}/{wanted} Ready", style="green" if wanted and ready >= wanted else "yellow")
        events = Text()
        for e in self.timeline.events[-6:]:
            events.append(f"  {e.t - origin:+7.1f}s  {e.kind} {e.subject} {e.detail}\n", style="dim")
        return Group(head, table, nodes, events)


def checks_table(experiment: str, target: str, checks: list[Check], ok: bool) -> Table:
    verdict = "[green]hypothesis holds[/green]" if ok else "[red]hypothesis missed[/red]"
    table = Table(title=f"{experiment} on {target}: {verdict}", title_justify="left")
    for col in ("measurement", "measured", "hypothesis", "result"):
        table.add_column(col)
    style = {"ok": "green", "missed": "bold red", "n/a": "dim", "off": "dim"}
    for c in checks:
        table.add_row(c.name, c.measured, c.limit, f"[{style[c.status]}]{c.status}[/{style[c.status]}]")
    return table


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _bars(
    samples: list[Sample], origin: float, tick: float
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(good spans, bad spans) as matplotlib broken_barh ranges, each sample covering ``tick``."""
    good: list[tuple[float, float]] = []
    bad: list[tuple[float, float]] = []
    for s in sorted(samples):
        (good if s.ok else bad).append((s.t - origin, tick))
    return good, bad


def write_png(
    path: Path,
    title: str,
    timeline: Timeline,
    origin: float,
    marks: dict[str, float | None],
    window: tuple[float, float],
    lead: float = 8.0,
) -> Path:
    """The timeline as a picture: one row per probe (green answered, red did not) with its
    availability over ``window`` (the fault and the recovery, as in the table), the canary's
    Ready pods and the Ready nodes below, the injection, end of fault, detection and recovery
    as vertical lines. Times in seconds from the injection; ``lead`` seconds of steady state
    before it are shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}, constrained_layout=True
    )
    rows = [n for n in SERIES if timeline.series.get(n)]
    for i, name in enumerate(rows):
        samples = timeline.series[name]
        tick = 1.0 if name == "canary-ready" else 0.5
        good, bad = _bars(samples, origin, tick)
        top.broken_barh(good, (i - 0.35, 0.7), facecolors="tab:green")
        top.broken_barh(bad, (i - 0.35, 0.7), facecolors="tab:red")
        inside = [s for s in samples if window[0] <= s.t <= window[1]]
        if inside and name != "canary-ready":  # a state, not an availability: no percentage
            pct = f"{100 * sum(s.ok for s in inside) / len(inside):.1f}%"
            top.text(1.005, i, pct, transform=top.get_yaxis_transform(), va="center", fontsize=9)
    top.set_yticks(range(len(rows)), [SERIES[n] for n in rows])
    top.set_ylim(-0.6, len(rows) - 0.4)
    top.invert_yaxis()
    top.set_title(title, loc="left", fontsize=11)
    top.tick_params(axis="x", labelbottom=False)

    ready = timeline.series.get("canary-ready", [])
    counts = [(s.t - origin, int(s.detail.split("/")[0])) for s in ready if "/" in s.detail]
    if counts:
        xs, ys = zip(*counts, strict=True)
        bottom.step(xs, ys, where="post", color="tab:blue", label="canary pods Ready")
    nodes = timeline.series.get("nodes-ready", [])
    ncounts = [(s.t - origin, int(s.detail.split("/")[0])) for s in nodes if "/" in s.detail]
    if ncounts:
        xs, ys = zip(*ncounts, strict=True)
        bottom.step(xs, ys, where="post", color="tab:gray", linestyle="--", label="nodes Ready")
    highest = max([y for _, y in counts] + [y for _, y in ncounts] + [1])
    bottom.set_ylim(0, highest + 0.5)
    bottom.set_ylabel("count")
    bottom.set_xlabel("seconds from the injection")
    bottom.yaxis.get_major_locator().set_params(integer=True)

    for kind, t in marks.items():
        if t is None:
            continue
        label, colour = MARKS[kind]
        style = "-" if kind in ("inject", "fault-end") else ":"
        top.axvline(t - origin, color=colour, linestyle=style, lw=1.5, label=f"{label} ({t - origin:+.1f} s)")
        bottom.axvline(t - origin, color=colour, linestyle=style, lw=1.5)
    top.legend(loc="upper left", bbox_to_anchor=(0, -0.02, 1, 0), ncols=4, fontsize=8, frameon=False)
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(loc="lower right", fontsize=8)
    last = max((s.t for series in timeline.series.values() for s in series), default=window[1])
    bottom.set_xlim(-lead, max(last, window[1]) - origin + 1)
    bottom.grid(alpha=0.3)
    top.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
