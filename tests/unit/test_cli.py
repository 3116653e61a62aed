"""Unit tests of the CLI (provisioner.cli) through typer's CliRunner: --version, cluster plan
(table and JSON), inventory generate, bad or missing cluster files (exit 2, one line per
problem, no traceback, nothing written), and commands that change nodes refusing without
--yes when there is no terminal.

No test here reaches a node: the cluster file used for commands that change nodes has
addresses in TEST-NET-1 (192.0.2.0/24, never routed) and an SSH key that does not exist,
and ``apply.execute`` (where every phase starts) is replaced by a recorder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner import __version__, apply, pki, plan, spec
from provisioner.cli import app
from provisioner.state import ClusterDir

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "inventory" / "sample" / "ha.yaml"
runner = CliRunner()

UNREACHABLE = """\
name: unit
artifacts: {{files_repo: "http://192.0.2.1:9"}}
ssh: {{user: root, private_key: {key}}}
nodes:
  - {{name: cp1, address: 192.0.2.11, roles: [etcd, control-plane]}}
  - {{name: w1, address: 192.0.2.21, roles: [worker]}}
"""


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A command that forgot --state-dir writes under tmp_path, not the project's ./clusters."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def executed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Phases never run: record the command that would have run them instead."""
    calls: list[str] = []

    def record(phases: list[Any], ctx: apply.Context, dry_run: bool = False) -> list[str]:
        calls.append(ctx.command)
        return []

    monkeypatch.setattr(apply, "execute", record)
    return calls


@pytest.fixture
def unreachable(tmp_path: Path) -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(UNREACHABLE.format(key=tmp_path / "no-such-key"))
    return path


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"provisioner {__version__}"


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "cluster" in result.output and "inventory" in result.output and "Traceback" not in result.output


def test_plan_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cluster", "plan", "-f", str(HA), "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    for text in (
        "cluster ha",
        "kubernetes v1.37.2",
        "etcd: cp1, cp2, cp3",
        "control-plane: cp1, cp2, cp3",
        "worker: w1, w2",
        "10.233.64.0/24 (new)",
        "10.233.68.0/24 (new)",
        "plays that create runs",
    ):
        assert text in result.output, text
    assert files_under(tmp_path / "state") == [], "plan writes nothing"


def test_plan_json_has_roles_blocks_and_plays(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = runner.invoke(app, ["cluster", "plan", "-f", str(HA), "--state-dir", str(state), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cluster"] == "ha" and data["versions"]["kubernetes"] == "v1.37.2"
    assert data["roles"] == {
        "etcd": ["cp1", "cp2", "cp3"],
        "control-plane": ["cp1", "cp2", "cp3"],
        "worker": ["w1", "w2"],
    }
    assert [(n["name"], n["pod_block"], n["new_block"]) for n in data["nodes"]] == [
        ("cp1", "10.233.64.0/24", True),
        ("cp2", "10.233.65.0/24", True),
        ("cp3", "10.233.66.0/24", True),
        ("w1", "10.233.67.0/24", True),
        ("w2", "10.233.68.0/24", True),
    ]
    assert data["plays"] == plan.plays() and data["plays"], "the plays of playbooks/cluster.yml, in order"
    assert all(p["name"] and p["hosts"] for p in data["plays"])
    assert files_under(state) == []


def test_plan_shows_recorded_blocks(tmp_path: Path) -> None:
    cdir = ClusterDir.for_cluster("ha", tmp_path)
    cdir.write_blocks({"cp1": "10.233.70.0/24"})
    result = runner.invoke(app, ["cluster", "plan", "-f", str(HA), "--state-dir", str(tmp_path), "-o", "json"])
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert nodes["cp1"]["pod_block"] == "10.233.70.0/24" and not nodes["cp1"]["new_block"]
    assert nodes["cp2"]["pod_block"] == "10.233.64.0/24" and nodes["cp2"]["new_block"]


def test_inventory_generate_to_a_directory(tmp_path: Path) -> None:
    out, state = tmp_path / "inv", tmp_path / "state"
    result = runner.invoke(
        app, ["inventory", "generate", "--no-downloads", "-f", str(HA), "-o", str(out), "--state-dir", str(state)]
    )
    assert result.exit_code == 0, result.output
    assert f"inventory written to {out}" in " ".join(result.output.split())  # rich wraps at 80 columns
    assert sorted(str(p.relative_to(out)) for p in files_under(out)) == [
        "group_vars",
        "group_vars/all.yml",
        "hosts.yaml",
    ]
    assert "kube_control_plane:" in (out / "hosts.yaml").read_text()
    assert files_under(state) == [], "-o writes only there"


def test_inventory_generate_into_the_cluster_directory(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["inventory", "generate", "--no-downloads", "-f", str(HA), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    cdir = ClusterDir.for_cluster("ha", tmp_path)
    assert (cdir.inventory / "hosts.yaml").exists() and cdir.read_blocks()["w2"] == "10.233.68.0/24"
    assert oct(cdir.root.stat().st_mode & 0o777) == "0o700"


BAD = """\
name: bad
kubernetes: {version: v1.0.0}
netwrok: {}
nodes:
  - {name: cp1, address: 10.0.0.1, roles: [etcd, control-plane]}
  - {name: cp1, address: 10.0.0.1, roles: [worker]}
"""


@pytest.mark.parametrize(
    "args",
    [
        ["cluster", "plan", "--state-dir", "STATE"],
        ["cluster", "create", "--state-dir", "STATE"],
        ["cluster", "preflight"],
        ["cluster", "reset", "--yes", "--state-dir", "STATE"],
        ["inventory", "generate", "--state-dir", "STATE"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_a_bad_file_exits_2_one_line_per_problem_and_writes_nothing(
    args: list[str], tmp_path: Path, executed: list[str]
) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text(BAD)
    state = tmp_path / "state"
    result = runner.invoke(app, [*(str(state) if a == "STATE" else a for a in args), "-f", str(bad)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), "a clean exit, no exception"
    lines = result.output.splitlines()
    assert all(line.startswith(f"error: {bad}: ") for line in lines), lines
    problems = [line.removeprefix(f"error: {bad}: ") for line in lines]
    for field, says in (
        ("netwrok", "did you mean `network`?"),
        ("kubernetes.version", "is not supported"),
        ("nodes[1].name", "must be unique"),
        ("nodes[1].address", "already used by nodes[0]"),
    ):
        assert any(p.startswith(f"{field}: ") and says in p for p in problems), (field, problems)
    assert len(problems) == len(spec_problems(bad)), "one line per problem, each once"
    assert files_under(state) == [] and files_under(tmp_path / "clusters") == []
    assert executed == []


def spec_problems(path: Path) -> list[str]:
    with pytest.raises(spec.SpecError) as caught:
        spec.load(path)
    return caught.value.problems


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cluster", "plan", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {tmp_path / 'nope.yaml'}: cannot read the cluster file: No such file or directory"
    )


def test_the_default_file_is_cluster_yaml_in_the_working_directory() -> None:
    result = runner.invoke(app, ["cluster", "plan"])
    assert result.exit_code == 2 and "cluster.yaml: cannot read the cluster file" in result.output


CHANGES_NODES = [
    ["cluster", "reset"],
    ["cluster", "remove-node", "w1"],
    ["cluster", "certs", "renew"],
    ["cluster", "etcd", "restore", "SNAPSHOT"],
]
COMMAND = {"reset": "reset", "remove-node": "remove-node", "certs": "certs-renew", "etcd": "etcd-restore"}


def _args(args: list[str], tmp_path: Path) -> list[str]:
    snapshot = tmp_path / "etcd.db"
    snapshot.write_bytes(b"snapshot")
    return [str(snapshot) if a == "SNAPSHOT" else a for a in args]


@pytest.mark.parametrize("args", CHANGES_NODES, ids=lambda a: " ".join(a[1:]))
def test_commands_that_change_nodes_need_yes_without_a_terminal(
    args: list[str], tmp_path: Path, unreachable: Path, executed: list[str]
) -> None:
    state = tmp_path / "state"
    result = runner.invoke(app, [*_args(args, tmp_path), "-f", str(unreachable), "--state-dir", str(state)])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"error: cluster {args[1]}") and line.endswith("; add --yes to confirm"), line
    assert executed == [], "refused before any phase"
    assert files_under(state) == [], "refused before the cluster directory (and its log) was made"


@pytest.mark.parametrize("args", CHANGES_NODES, ids=lambda a: " ".join(a[1:]))
def test_with_yes_the_same_commands_go_ahead(
    args: list[str], tmp_path: Path, unreachable: Path, executed: list[str]
) -> None:
    """The control for the test above: --yes is what was missing (phases are recorded, not run)."""
    state = tmp_path / "state"
    result = runner.invoke(app, [*_args(args, tmp_path), "--yes", "-f", str(unreachable), "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    assert executed == [COMMAND[args[1]]]


def test_etcd_restore_names_a_missing_snapshot(tmp_path: Path, unreachable: Path, executed: list[str]) -> None:
    missing = tmp_path / "nope.db"
    result = runner.invoke(
        app, ["cluster", "etcd", "restore", str(missing), "--yes", "-f", str(unreachable), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and f"snapshot {missing} does not exist" in result.output
    assert executed == []


def test_certs_check(tmp_path: Path, unreachable: Path) -> None:
    state = tmp_path / "state"
    args = ["cluster", "certs", "check", "-f", str(unreachable), "--state-dir", str(state)]
    result = runner.invoke(app, args)
    assert (
        result.exit_code == 1
        and "no certificates in" in result.output
        and "run `cluster create` first" in result.output
    )
    pki.ensure(spec.load(unreachable), ClusterDir.for_cluster("unit", state).pki, "10.233.0.1", 6444)
    result = runner.invoke(app, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in json.loads(result.stdout)}
    assert rows["ca.crt"]["days_left"] > 3000 and rows["apiserver.crt"]["days_left"] >= 364


def test_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "--install-completion" in result.output


# -- the BGP full-mesh warning of cluster plan (issue 14) ------------------------------------

LARGE = ROOT / "inventory" / "sample" / "large.yaml"


def large_file(tmp_path: Path, workers: int, route_reflectors: bool = False, etcd_only: int = 0) -> Path:
    """The large sample (3 control planes) with ``workers`` workers and, unless asked, no reflectors."""
    import yaml

    data = yaml.safe_load(LARGE.read_text())
    data["network"]["route_reflectors"] = ["cp1", "cp2"] if route_reflectors else []
    cps = [n for n in data["nodes"] if "control-plane" in n["roles"]]
    # etcd_only (odd) etcd-only nodes take over etcd from the control planes
    etcd = [{"name": f"e{i}", "address": f"172.20.9.{i + 1}", "roles": ["etcd"]} for i in range(etcd_only)]
    if etcd:
        cps = [{**n, "roles": ["control-plane"]} for n in cps]
    workers_ = [
        {"name": f"w{i:03d}", "address": f"172.20.{2 + i // 200}.{i % 200 + 11}", "roles": ["worker"]}
        for i in range(workers)
    ]
    data["nodes"] = cps + etcd + workers_
    path = tmp_path / "large.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def plan_json(path: Path, tmp_path: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["cluster", "plan", "-f", str(path), "--state-dir", str(tmp_path / "s"), "-o", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plan_warns_above_50_nodes_in_a_full_mesh(tmp_path: Path) -> None:
    path = large_file(tmp_path, workers=48)  # 51 nodes
    [warning] = plan_json(path, tmp_path)["warnings"]
    assert "BGP full mesh of 51 nodes is 1275 BGP sessions (n*(n-1)/2, 50 on every node)" in warning
    assert "`network.route_reflectors: [cp1, cp2]` (99 sessions)" in warning
    table = runner.invoke(app, ["cluster", "plan", "-f", str(path), "--state-dir", str(tmp_path / "s")])
    assert table.exit_code == 0 and f"warning: {warning}" in table.output.splitlines()


@pytest.mark.parametrize(
    ("workers", "reflectors", "etcd_only"),
    [(47, False, 0), (48, True, 0), (47, False, 3)],
    ids=["50 nodes", "51 nodes with reflectors", "50 BGP speakers and 3 etcd-only nodes"],
)
def test_plan_does_not_warn_at_50_speakers_or_with_reflectors(
    tmp_path: Path, workers: int, reflectors: bool, etcd_only: int
) -> None:
    path = large_file(tmp_path, workers, reflectors, etcd_only)
    data = plan_json(path, tmp_path)
    assert len(data["nodes"]) == 3 + workers + etcd_only and data["warnings"] == []
    table = runner.invoke(app, ["cluster", "plan", "-f", str(path), "--state-dir", str(tmp_path / "s")])
    assert table.exit_code == 0 and "warning" not in table.output


def test_the_samples_plan_without_warnings(tmp_path: Path) -> None:
    for sample in (HA, LARGE):
        assert plan_json(sample, tmp_path)["warnings"] == [], sample


def test_bgp_sessions_as_bird_conf_makes_them() -> None:
    """Half the sum of every speaker's peers (checks/test_node.py's count, as bird.conf.j2)."""
    for n, r in ((51, 0), (51, 2), (1000, 3), (4, 1)):
        peers = [n - 1] * r + [r if r else n - 1] * (n - r)
        assert plan.bgp_sessions(n, r) == sum(peers) // 2, (n, r)


# -- what the CLI imports (issue 14) -------------------------------------------------------


def test_version_help_and_plan_import_no_ssh_ansible_or_crypto(tmp_path: Path) -> None:
    """`--version` and `cluster plan` start fast: paramiko, ansible-runner, cryptography and
    testinfra are imported only by the commands that use them."""
    import subprocess
    import sys

    heavy = ("paramiko", "ansible_runner", "ansible", "cryptography", "testinfra", "pytest", "mitogen")
    code = (
        "import sys\n"
        "from provisioner.cli import app\n"
        "for args in (['--version'], ['cluster', 'plan', '-f', sys.argv[1], '--state-dir', sys.argv[2]]):\n"
        "    try:\n"
        "        app(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(HA), str(tmp_path / "s")], capture_output=True, text=True, check=True
    )
    assert run.stdout.splitlines()[-1] == "[]", run.stdout + run.stderr


def test_the_cli_mirror_default_is_the_labs() -> None:
    from provisioner import cli
    from provisioner.lab import manager

    assert cli.DEFAULT_MIRROR == manager.DEFAULT_MIRROR
