"""Live progress of a playbook run, drawn with rich from ansible-runner events."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


class PlaybookProgress:
    """Per-play, per-task, per-host counters and elapsed time; feed it runner events."""

    def __init__(self, title: str, console: Console | None = None):
        self.title = title
        self.console = console or Console(stderr=True)
        self.play = ""
        self.task = ""
        self.tasks_seen = 0
        self.started = time.monotonic()
        self.hosts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._live: Live | None = None

    def __enter__(self) -> PlaybookProgress:
        self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._live.update(self.render())
            self._live.__exit__(*exc)  # type: ignore[arg-type]

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
        elif kind == "playbook_on_task_start":
            self.task = data.get("task", "")
            self.tasks_seen += 1
        elif kind.startswith("runner_on_"):
            host = data.get("host", "?")
            counts = self.hosts[host]
            if kind == "runner_on_ok":
                counts["changed" if data.get("res", {}).get("changed") else "ok"] += 1
            elif kind == "runner_on_failed":
                counts["ignored" if data.get("ignore_errors") else "failed"] += 1
            elif kind == "runner_on_skipped":
                counts["skipped"] += 1
            elif kind == "runner_on_unreachable":
                counts["unreachable"] += 1
        if self._live:
            self._live.update(self.render())

    def render(self) -> Group:
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            (f"{self.title}", "bold"),
            f"  {elapsed:5.0f}s  play: ",
            (self.play or "-", "cyan"),
            f"  task {self.tasks_seen}: ",
            (self.task or "-", "magenta"),
        )
        table = Table(box=None, padding=(0, 1), show_edge=False)
        for col in ("host", "ok", "changed", "skipped", "failed"):
            table.add_column(col, justify="left" if col == "host" else "right")
        for host in sorted(self.hosts):
            c = self.hosts[host]
            failed = c["failed"] + c["unreachable"]
            table.add_row(
                host,
                str(c["ok"]),
                Text(str(c["changed"]), style="yellow" if c["changed"] else ""),
                str(c["skipped"]),
                Text(str(failed), style="bold red" if failed else ""),
            )
        return Group(head, table)
