"""Unit tests of the runner (provisioner.runner): a real tiny playbook on local hosts
(ansible_connection=local) through ansible-runner: per-host stats, the log, and a failing
task named by host, task and message."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioner import ansible_config
from provisioner.runner import PlaybookFailed, RunResult, play_times, run_playbook

LOCAL = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
INVENTORY = {"all": {"hosts": {"here": dict(LOCAL), "there": dict(LOCAL)}}}
PLAY = """
- name: A tiny play
  hosts: all
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        dest: "{{ target }}-{{ inventory_hostname }}"
        content: "hello\\n"
        mode: "0644"
"""
FAILING = (
    PLAY
    + """
    - name: Give up on purpose
      ansible.builtin.fail:
        msg: boom
      when: inventory_hostname == 'there'

    - name: Only the survivors get here
      ansible.builtin.debug:
        msg: still here
"""
)


@pytest.fixture(autouse=True)
def no_mitogen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain Ansible unless a test asks for mitogen's strategy."""
    monkeypatch.setenv("PROVISIONER_MITOGEN", "0")


def _run(tmp_path: Path, play: str, **kw: Any) -> RunResult:
    (tmp_path / "play.yml").write_text(play)
    return run_playbook(
        tmp_path / "play.yml", INVENTORY, tmp_path / "runner", extravars={"target": str(tmp_path / "out")}, **kw
    )


def test_a_playbook_runs_and_reports_per_host_stats(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    events: list[str] = []
    first = _run(tmp_path, PLAY, log_path=log, on_event=lambda e: events.append(e.get("event", "")))
    assert first.ok and first.rc == 0 and first.status == "successful" and first.failures == []
    assert set(first.stats) == {"here", "there"}
    for host in ("here", "there"):
        assert (first.stats[host].ok, first.stats[host].changed, first.stats[host].failed) == (1, 1, 0)
        assert (tmp_path / f"out-{host}").read_text() == "hello\n"
    assert first.changed == 2 and first.playbook == "play.yml" and first.log == log
    assert "playbook_on_task_start" in events and "playbook_on_stats" in events
    text = log.read_text()
    assert "TASK [Write a file]" in text
    slowest = text.split("slowest tasks (wall seconds, all hosts together):\n")[1]
    assert "Write a file" in slowest
    per_play = text.split("wall time per play (seconds):\n")[1].splitlines()
    assert len(per_play) == 1 and per_play[0].split(None, 1)[1] == _play_name()
    json.dumps(first.as_dict())  # what `--output json` prints

    again = _run(tmp_path, PLAY)
    assert again.ok and again.changed == 0
    assert (again.stats["here"].ok, again.stats["here"].changed) == (1, 0)


@pytest.mark.parametrize("mitogen", ["0", "1"], ids=["ansible", "mitogen"])
def test_a_failing_task_is_named_with_host_task_and_message(
    mitogen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both strategies: create runs with mitogen's when it is installed."""
    monkeypatch.setenv("PROVISIONER_MITOGEN", mitogen)
    if mitogen == "1" and ansible_config.mitogen_strategy_dir() is None:
        pytest.skip("mitogen is not installed")
    cfg = ansible_config.render(tmp_path, 2)
    assert ("strategy = mitogen_linear" in cfg) == (mitogen == "1")
    log = tmp_path / "run.log"
    result = _run(tmp_path, FAILING, log_path=log)
    assert not result.ok and result.rc != 0 and result.status == "failed"
    [failure] = result.failures
    assert (failure.host, failure.task, failure.message, failure.unreachable) == (
        "there",
        "Give up on purpose",
        "boom",
        False,
    )
    assert result.stats["there"].failed == 1 and result.stats["here"].failed == 0
    # "here" skipped the failing task and went on; "there" stopped at it
    assert (result.stats["here"].ok, result.stats["here"].skipped) == (2, 1)
    assert "Only the survivors get here" in log.read_text()
    message = str(PlaybookFailed(result))
    assert message.splitlines() == ["there: task 'Give up on purpose' failed: boom", f"full output: {log}"]


def _play_name() -> str:
    import yaml

    return yaml.safe_load(PLAY)[0]["name"]


def test_play_times_are_in_run_order_until_the_next_play_or_the_end() -> None:
    marks = [("one", "2026-11-24T10:00:00"), ("two", "2026-11-24T10:00:04.5"), ("", "2026-11-24T10:00:05")]
    assert play_times(marks) == [("one", 4.5), ("two", 0.5)]
