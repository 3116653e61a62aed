"""Unit tests of the CLI through typer's CliRunner: plan, inventory generate, --version,
bad input (exit 2, one line per problem, no traceback, nothing written) and destructive
commands refusing without --yes. No command here reaches a node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner import __version__
from provisioner.cli import app

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "inventory" / "sample" / "ha.yaml"
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_plan_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cluster", "plan", "-f", str(HA), "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("cluster ha", "kubernetes v1.37.2", "control-plane: cp1, cp2, cp3", "10.233.64.0/24", "plays"):
        assert text in result.output, text


def test_plan_json_has_roles_blocks_and_plays(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cluster", "plan", "-f", str(HA), "--state-dir", str(tmp_path), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["roles"]["worker"] == ["w1", "w2"]
    blocks = [n["pod_block"] for n in data["nodes"]]
    assert len(set(blocks)) == len(blocks) == 5
    assert any("Etcd" in p["name"] for p in data["plays"])
    assert not any(tmp_path.iterdir()) or not (tmp_path / "ha" / "pod-blocks.yaml").exists()  # plan writes nothing


def test_inventory_generate_to_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "inv"
    result = runner.invoke(
        app, ["inventory", "generate", "-f", str(HA), "-o", str(out), "--state-dir", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert (out / "hosts.yaml").exists() and (out / "group_vars" / "all.yml").exists()
    assert "kube_control_plane" in (out / "hosts.yaml").read_text()


def test_bad_file_exits_2_one_line_per_problem_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text(
        "name: bad\nkubernetes: {version: v1.0.0}\nnetwrok: {}\nnodes:\n"
        "  - {name: cp1, address: 10.0.0.1, roles: [etcd, control-plane]}\n"
        "  - {name: cp1, address: 10.0.0.1, roles: [worker]}\n"
    )
    state = tmp_path / "state"
    for args in (["cluster", "plan"], ["cluster", "create"], ["inventory", "generate"]):
        result = runner.invoke(app, [*args, "-f", str(bad), "--state-dir", str(state)])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert any("netwrok: unknown key; did you mean `network`?" in e for e in errors), errors
        assert not state.exists(), "nothing may be written for a bad file"
    # the pydantic problem (unknown key) is reported; after fixing it, the rule problems all come at once
    bad.write_text(bad.read_text().replace("netwrok: {}\n", ""))
    result = runner.invoke(app, ["cluster", "plan", "-f", str(bad), "--state-dir", str(state)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) >= 3, result.output
    assert any("kubernetes.version" in e for e in errors) and any("nodes[1].name" in e for e in errors)
    assert any("nodes[1].address" in e for e in errors)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cluster", "plan", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read the cluster file" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["cluster", "reset"],
        ["cluster", "remove-node", "w1"],
        ["cluster", "certs", "renew"],
        ["cluster", "etcd", "restore", "SNAPSHOT"],
    ],
)
def test_destructive_commands_need_yes_without_a_terminal(args: list[str], tmp_path: Path) -> None:
    snapshot = tmp_path / "etcd.db"
    snapshot.write_bytes(b"snapshot")
    args = [str(snapshot) if a == "SNAPSHOT" else a for a in args]
    result = runner.invoke(app, [*args, "-f", str(HA), "--state-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "add --yes to confirm" in result.output
    assert not (tmp_path / "ha" / "logs").exists()  # refused before any run


def test_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "--install-completion" in result.output
