"""`cluster chaos` at the CLI, without a node: the blast-radius guard refuses from the cluster
file alone (exit 2, one line) before anything is touched: no connection is tried (the
addresses are TEST-NET-1, never routed, and the command ends at once), no cluster directory,
log or inventory is written. Also: the experiments the CLI offers are the catalogue's, the
command keeps the CLI's imports lazy, and the chaos facts of the nodes parse."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.chaos import nodes
from provisioner.cli import ChaosExperiment, app
from provisioner.spec import CHAOS_EXPERIMENTS

runner = CliRunner()

ONE_CONTROL_PLANE = """\
name: unit
artifacts: {{files_repo: "http://192.0.2.1:9"}}
ssh: {{user: root, private_key: {key}}}
nodes:
  - {{name: cp1, address: 192.0.2.11, roles: [etcd, control-plane]}}
  - {{name: w1, address: 192.0.2.21, roles: [worker]}}
"""


@pytest.fixture
def one_cp(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(ONE_CONTROL_PLANE.format(key=tmp_path / "no-such-key"))
    return path


def test_the_cli_offers_the_catalogue() -> None:
    assert tuple(e.value for e in ChaosExperiment) == CHAOS_EXPERIMENTS


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["-e", "kill-control-plane"],
            "error: kill-control-plane on cp1 would leave 0 of 1 etcd members, below the quorum of 1: "
            "etcd would stop serving; nothing was changed",
        ),
        (
            ["-e", "kill-control-plane", "--target", "w1"],
            "error: --target w1: w1 is not a control plane; use kill-node or stop-kubelet; nothing was changed",
        ),
        (
            ["-e", "kill-etcd-leader"],
            "error: kill-etcd-leader on cp1 would leave 0 of 1 etcd members, below the quorum of 1: "
            "etcd would stop serving; nothing was changed",
        ),
        (["-e", "kill-node", "--target", "w9"],
         "error: --target w9: no such node in the cluster file (cp1, w1); nothing was changed"),
        ([], "error: --experiment: name one of kill-pod, kill-node, kill-control-plane, kill-etcd-leader, "
         "partition-node, stop-kubelet"),
    ],
)  # fmt: skip
def test_refused_from_the_file_alone_changes_nothing(one_cp: Path, tmp_path: Path, args: list[str], line: str) -> None:
    state = tmp_path / "state"
    started = time.monotonic()
    result = runner.invoke(app, ["cluster", "chaos", "-f", str(one_cp), "--state-dir", str(state), "--yes", *args])
    assert result.exit_code == 2, result.output
    assert [x for x in result.output.splitlines() if x.strip()] == [line]
    assert time.monotonic() - started < 5  # no SSH or API attempt (those would wait for a timeout)
    assert not state.exists()  # no cluster directory, log, inventory or kubectl download


def test_the_command_imports_nothing_heavy_until_it_runs(tmp_path: Path, one_cp: Path) -> None:
    """The refusal path loads the chaos package, but never ansible-runner or paramiko."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from provisioner.cli import app\n"
        f"r = CliRunner().invoke(app, ['cluster', 'chaos', '-f', {str(one_cp)!r}, '-e', 'kill-control-plane',"
        f" '--state-dir', {str(tmp_path / 's')!r}])\n"
        "assert r.exit_code == 2, r.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'paramiko', 'ansible_runner', 'matplotlib'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _facts(**raw: object) -> dict:
    return {"ansible_facts": {"provisioner_chaos_facts": raw}}


MEMBERS = json.dumps(
    {
        "members": [
            {"ID": int("4f648cd080f20c01", 16), "name": "cp1"},
            {"ID": int("ac3e2646766c516f", 16), "name": "cp2"},
            {"ID": int("b9b34d0b1799ee6c", 16), "name": "cp3"},
        ]
    }
)


def _status(member: str, leader: str) -> str:
    return json.dumps([{"Status": {"header": {"member_id": int(member, 16)}, "leader": int(leader, 16)}}])


def test_chaos_facts_parse() -> None:
    journal = [
        '{"level":"info","ts":"2026-11-24T23:40:01.500000Z","logger":"raft","msg":"raft.node: ac3e2646766c516f '
        'lost leader 4f648cd080f20c01 at term 2"}',
        '{"level":"info","ts":"2026-11-24T23:40:02.000000Z","logger":"raft","msg":"ac3e2646766c516f is starting a '
        'new election at term 2"}',
        '{"level":"info","ts":"2026-11-24T23:40:02.250000Z","logger":"raft","msg":"ac3e2646766c516f became leader '
        'at term 3"}',
        '{"level":"warn","ts":"2026-11-24T23:40:01.100000Z","msg":"peer became inactive (message send to peer '
        'failed)","peer-id":"4f648cd080f20c01"}',
        "not json",
    ]
    marker = json.dumps({"experiment": "kill-node", "run": "r1", "armed": "2026-11-24T23:40:00Z", "undo_after_s": 60})
    results = {
        "cp1": _facts(etcd_status="", etcd_members=MEMBERS, units={"etcd": "inactive"}, canary_key="k1"),
        "cp2": _facts(
            etcd_status=_status("ac3e2646766c516f", "ac3e2646766c516f"), etcd_journal=journal, timer="inactive"
        ),
        "cp3": _facts(etcd_status=_status("b9b34d0b1799ee6c", "ac3e2646766c516f"), canary_key="k1"),
        "w1": _facts(marker=marker, partition=True, timer="active", units={"kubelet": "inactive"}),
    }
    f = nodes.from_results(["cp1", "cp2", "cp3", "w1", "w2"], results)
    assert f.members == {"4f648cd080f20c01": "cp1", "ac3e2646766c516f": "cp2", "b9b34d0b1799ee6c": "cp3"}
    assert f.leader == "cp2"
    assert f.etcd_healthy == {"cp1": False, "cp2": True, "cp3": True}
    assert f.canary_key == "k1"
    assert not f.nodes["w2"].reachable
    assert f.nodes["w1"].partition and f.nodes["w1"].timer == "active"
    assert list(f.active) == ["w1"] and f.active["w1"].startswith("kill-node of run r1, armed 2026-11-24T23:40:00Z")
    events = [(e.kind, e.subject) for e in f.events()]
    assert events == [
        ("peer-inactive", "cp1"),
        ("leader-lost", "cp1"),
        ("election-started", "cp2"),
        ("leader-elected", "cp2"),
    ]


def test_no_leader_when_the_members_disagree() -> None:
    results = {
        "cp1": _facts(etcd_status=_status("4f648cd080f20c01", "4f648cd080f20c01"), etcd_members=MEMBERS),
        "cp2": _facts(etcd_status=_status("ac3e2646766c516f", "ac3e2646766c516f")),
    }
    assert nodes.from_results(["cp1", "cp2"], results).leader is None


def test_signal_handlers_come_back_after_a_play() -> None:
    """ansible-runner replaces SIGINT/SIGTERM for good; the chaos runner puts its own back, so that
    Ctrl-C during the fault still reaches the undo."""
    import signal

    from provisioner.chaos.runner import interruptible, own_signals

    before_int = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    before_term = signal.getsignal(signal.SIGTERM)
    with interruptible():
        ours = signal.getsignal(signal.SIGTERM)
        with own_signals():
            signal.signal(signal.SIGTERM, lambda *a: None)  # what ansible_runner.run does
            signal.signal(signal.SIGINT, lambda *a: None)
        assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGINT) is before_int
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before_term
