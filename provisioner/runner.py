"""Run a playbook through ansible-runner: private data dir, events -> progress, result.

The full Ansible output goes to the log file; the terminal gets a compact live view.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from provisioner import ansible_config
from provisioner.errors import ProvisionerError
from provisioner.paths import PLAYBOOKS


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    ignored: int = 0
    rescued: int = 0

    @property
    def tasks(self) -> int:
        return self.ok + self.failed + self.skipped + self.unreachable


@dataclass
class Failure:
    host: str
    task: str
    message: str
    unreachable: bool = False

    def line(self) -> str:
        what = "unreachable" if self.unreachable else "failed"
        return f"{self.host}: task '{self.task}' {what}: {self.message}"


@dataclass
class RunResult:
    playbook: str
    rc: int
    status: str
    elapsed: float
    stats: dict[str, HostStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    log: Path | None = None
    collected: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> result of `collect`

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.stats.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "rc": self.rc,
            "status": self.status,
            "elapsed_s": round(self.elapsed, 2),
            "stats": {h: vars(s) for h, s in self.stats.items()},
            "failures": [vars(f) for f in self.failures],
            "log": str(self.log) if self.log else None,
        }


class PlaybookFailed(ProvisionerError):
    def __init__(self, result: RunResult):
        self.result = result
        lines = [f.line() for f in result.failures] or [
            f"{result.playbook} ended with status {result.status} (rc {result.rc})"
        ]
        if result.log:
            lines.append(f"full output: {result.log}")
        super().__init__("\n".join(lines))


def _message(res: dict[str, Any]) -> str:
    msg = res.get("msg") or res.get("reason") or ""
    stderr = str(res.get("stderr") or "").strip()
    if stderr and stderr not in str(msg):
        msg = f"{msg}: {stderr[-300:]}" if msg else stderr
    if not msg and res.get("results"):
        for item in res["results"]:
            if item.get("failed"):
                msg = item.get("msg") or item.get("stderr") or ""
                break
    return " ".join(str(msg).split())[:500] or "(no message)"


def _put_ansible_on_path() -> None:
    """ansible-runner looks ansible-playbook up on PATH; a venv need not be on it."""
    here = str(Path(sys.executable).parent)
    if (Path(here) / "ansible-playbook").exists() and here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


EventSink = Callable[[dict[str, Any]], None]


def ansible_env(config: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Only the config file: every Ansible setting lives in the cluster's ansible.cfg, so
    that plain ansible-playbook runs the same thing."""
    env = {"ANSIBLE_CONFIG": str(config)}
    env.update(extra or {})
    return env


def task_times(marks: list[tuple[str, str]]) -> list[tuple[str, float]]:
    """Wall time of each task (until the next task or play starts), slowest first."""
    from datetime import datetime

    times: dict[str, float] = {}
    stamps = [(name, datetime.fromisoformat(created)) for name, created in marks]
    for (name, start), (_, end) in itertools.pairwise(stamps):
        times[name] = times.get(name, 0.0) + (end - start).total_seconds()
    return sorted(times.items(), key=lambda kv: kv[1], reverse=True)


def play_times(marks: list[tuple[str, str]]) -> list[tuple[str, float]]:
    """Wall time of each play (from its start until the next play starts or the run ends),
    in the order they ran; ``marks`` holds (play, created) at each play start, then the end."""
    from datetime import datetime

    stamps = [(name, datetime.fromisoformat(created)) for name, created in marks]
    return [(name, (end - start).total_seconds()) for (name, start), (_, end) in itertools.pairwise(stamps)]


def run_playbook(
    playbook: str | Path,
    inventory: str | Path | dict[str, Any],
    data_dir: Path,
    log_path: Path | None = None,
    limit: str | None = None,
    extravars: dict[str, Any] | None = None,
    on_event: EventSink | None = None,
    check: bool = False,
    envvars: dict[str, str] | None = None,
    config: Path | None = None,
    collect: str | None = None,
) -> RunResult:
    """Run one playbook; return per-host stats and the failures, named by host and task.
    ``collect`` names a task whose per-host results are returned (facts gathering)."""
    playbook = Path(playbook)
    if not playbook.is_absolute():
        playbook = PLAYBOOKS / playbook
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if config is None:  # a playbook run outside a cluster directory (tests, tools)
        config = ansible_config.write(data_dir, node_count=5)
    failures: list[Failure] = []
    collected: dict[str, dict[str, Any]] = {}
    marks: list[tuple[str, str]] = []  # (task, created) at each task start, then the end
    play_marks: list[tuple[str, str]] = []  # (play, created) at each play start, then the end
    log = open(log_path, "a") if log_path else None

    def handler(event: dict[str, Any]) -> bool:
        if log and event.get("stdout"):
            log.write(event["stdout"] + "\n")
        data = event.get("event_data", {})
        kind = event.get("event")
        if kind in ("playbook_on_task_start", "playbook_on_play_start", "playbook_on_stats") and event.get("created"):
            marks.append((data.get("task") or data.get("play") or "", event["created"]))
            if kind != "playbook_on_task_start":
                play_marks.append((data.get("play") or "", event["created"]))
        if collect and kind == "runner_on_ok" and str(data.get("task", "")).endswith(collect):
            collected[data.get("host", "?")] = data.get("res", {})
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            failures.append(
                Failure(
                    host=data.get("host", "?"),
                    task=data.get("task", "?"),
                    message=_message(data.get("res", {})),
                    unreachable=kind == "runner_on_unreachable",
                )
            )
        if on_event:
            on_event(event)
        return True

    _put_ansible_on_path()
    cmdline = "--check --diff" if check else None
    started = time.monotonic()
    try:
        r = ansible_runner.run(
            private_data_dir=str(data_dir),
            playbook=str(playbook),
            inventory=inventory if isinstance(inventory, dict) else str(inventory),
            limit=limit,
            extravars=extravars or {},
            envvars=ansible_env(config, envvars),
            event_handler=handler,
            quiet=True,
            rotate_artifacts=3,
            cmdline=cmdline,
            suppress_env_files=True,
        )
    finally:
        if log:
            slowest = task_times(marks)[:12]
            if slowest:
                log.write("\nslowest tasks (wall seconds, all hosts together):\n")
                log.writelines(f"  {seconds:7.1f}  {task}\n" for task, seconds in slowest)
            plays = play_times(play_marks)
            if plays:
                log.write("\nwall time per play (seconds):\n")
                log.writelines(f"  {seconds:7.1f}  {play}\n" for play, seconds in plays)
            log.close()
    elapsed = time.monotonic() - started
    stats: dict[str, HostStats] = {}
    raw = r.stats or {}
    for key, attr in (
        ("ok", "ok"),
        ("changed", "changed"),
        ("failures", "failed"),
        ("skipped", "skipped"),
        ("dark", "unreachable"),
        ("ignored", "ignored"),
        ("rescued", "rescued"),
    ):
        for host, count in (raw.get(key) or {}).items():
            setattr(stats.setdefault(host, HostStats()), attr, count)
    return RunResult(
        playbook=playbook.name,
        rc=r.rc,
        status=r.status,
        elapsed=elapsed,
        stats=stats,
        failures=failures,
        log=log_path,
        collected=collected,
    )
