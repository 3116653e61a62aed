"""The `provisioner` command: parses, calls, prints. The work lives in the modules.

The modules a command needs are imported inside it: `--version`, `--help` and `cluster plan`
must not pay for paramiko, ansible-runner, cryptography or testinfra (issue 14)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from provisioner.errors import ProvisionerError
from provisioner.lab.host import CACHE_ROOT, LabError
from provisioner.versions import SUPPORTED_KUBERNETES

if TYPE_CHECKING:
    from provisioner import apply
    from provisioner import preflight as pre
    from provisioner.lab.manager import Lab
    from provisioner.runner import RunResult
    from provisioner.spec import ClusterSpec
    from provisioner.state import ClusterDir

DEFAULT_MIRROR = CACHE_ROOT / "mirror"  # lab.manager.DEFAULT_MIRROR, without importing the lab

app = typer.Typer(help="Declarative Kubernetes clusters on plain Linux machines.", no_args_is_help=True)
cluster_app = typer.Typer(help="Plan, check and operate a cluster from its cluster file.", no_args_is_help=True)
inventory_app = typer.Typer(help="The generated Ansible inventory.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
lab_app = typer.Typer(help="The local lab: machine-container nodes on a private bridge.", no_args_is_help=True)
app.add_typer(inventory_app, name="inventory")
app.add_typer(lab_app, name="lab")
mirror_app = typer.Typer(help="The offline artifact mirror (files_repo).", no_args_is_help=True)
app.add_typer(mirror_app, name="mirror")

out = Console()
err = Console(stderr=True)


class Output(StrEnum):
    table = "table"
    json = "json"


FileOpt = Annotated[Path, typer.Option("--file", "-f", help="The cluster file.", show_default=True)]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Parent of the cluster directories (default ./clusters)."),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table for people, json for scripts.")]
AcceptHostKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--accept-host-key",
        metavar="NODE",
        help="Pin the SSH host key NODE offers now in place of the pinned one (after a re-install). Repeatable.",
    ),
]


def fail(lines: list[str] | str, code: int = 1) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_spec(path: Path) -> ClusterSpec:
    from provisioner.spec import SpecError, load

    try:
        return load(path)
    except SpecError as exc:
        fail(exc.lines(), code=2)


def cluster_dir(spec: ClusterSpec, state_dir: Path | None) -> ClusterDir:
    from provisioner.state import ClusterDir

    return ClusterDir.for_cluster(spec.name, state_dir)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        from provisioner import __version__

        out.print(f"provisioner {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Declarative Kubernetes clusters on plain Linux machines."""


# -- cluster plan / preflight -----------------------------------------------------------


@cluster_app.command("plan")
def cluster_plan(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Show what `cluster create` would do: nodes, versions, networks, pod blocks, plays."""
    from provisioner import inventory as inv
    from provisioner import plan as plan_mod

    spec = load_spec(file)
    previous = cluster_dir(spec, state_dir).read_blocks()
    try:
        data = plan_mod.make_plan(spec, previous)
    except inv.BlockError as exc:
        fail(str(exc), code=2)
    if output is Output.json:
        emit_json(data)
        return
    out.print(f"[bold]cluster[/bold] {data['cluster']}   files_repo {data['files_repo']}")
    out.print("versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    out.print("network:  " + ", ".join(f"{k} {v}" for k, v in data["network"].items()))
    for role, names in data["roles"].items():
        out.print(f"{role:>13}: {', '.join(names) or '-'}")
    for a in data["addons"]:
        state = f"{a['version']}: {a['what']}" if a["enabled"] else f"off ({a['field']}: false)"
        out.print(f"addon {a['name']} {state}", highlight=False, soft_wrap=True)
    nodes = Table(title="nodes", title_justify="left")
    for col in ("name", "address", "roles", "pod block"):
        nodes.add_column(col)
    for n in data["nodes"]:
        block = n["pod_block"] + (" (new)" if n["new_block"] else "")
        nodes.add_row(n["name"], n["address"], ",".join(n["roles"]), block)
    out.print(nodes)
    plays = Table(title="plays that create runs", title_justify="left")
    plays.add_column("#", justify="right")
    plays.add_column("play")
    plays.add_column("hosts")
    for i, p in enumerate(data["plays"], 1):
        plays.add_row(str(i), p["name"], p["hosts"])
    out.print(plays)
    for warning in data["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)


def preflight_table(reports: list[pre.HostReport]) -> Table:
    table = Table(title="preflight", title_justify="left")
    table.add_column("host")
    table.add_column("address")
    table.add_column("result")
    table.add_column("findings")
    for r in reports:
        notes = [f"{c.name}: {c.detail}" for c in r.checks if not c.ok]
        table.add_row(r.name, r.address, "[green]ok[/green]" if r.ok else "[red]FAIL[/red]", "\n".join(notes) or "-")
    return table


def run_preflight(
    spec: ClusterSpec, cdir: ClusterDir, output: Output = Output.table, accept: list[str] | None = None
) -> list[pre.HostReport]:
    """Check every host; on any failure print the table and exit 1 (nothing changed)."""
    from provisioner import preflight as pre

    try:
        reports = pre.run(spec, cluster_dir=cdir.root, accept=set(accept or []))
    except ProvisionerError as exc:
        fail(exc.lines(), code=exc.exit_code)
    if output is Output.json:
        emit_json(
            [{"host": r.name, "address": r.address, "ok": r.ok, "checks": [vars(c) for c in r.checks]} for r in reports]
        )
    else:
        err.print(preflight_table(reports))
    if not all(r.ok for r in reports):
        fail(str(pre.PreflightFailed(reports)).splitlines())
    return reports


@cluster_app.command("preflight")
def cluster_preflight(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    output: OutputOpt = Output.table,
    accept_host_key: AcceptHostKeyOpt = None,
) -> None:
    """Read-only checks of every host (SSH host key, SSH, sudo, python3, OS, swap, cgroups, ports)."""
    spec = load_spec(file)
    run_preflight(spec, cluster_dir(spec, state_dir), output, accept_host_key)


# -- create ----------------------------------------------------------------------------------

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would run; change nothing.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")]


def confirm(yes: bool, what: str, question: str) -> None:
    """Ask before a destructive command; without a terminal, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(f"{what}; add --yes to confirm", code=2)
    typer.confirm(question, abort=True)


def stats_table(results: list[RunResult]) -> Table:
    table = Table(title="tasks per host", title_justify="left")
    for col in ("playbook", "host", "ok", "changed", "skipped", "failed", "seconds"):
        table.add_column(col, justify="left" if col in ("playbook", "host") else "right")
    for r in results:
        for host, s in sorted(r.stats.items()):
            table.add_row(
                r.playbook,
                host,
                str(s.ok),
                str(s.changed),
                str(s.skipped),
                str(s.failed + s.unreachable),
                f"{r.elapsed:.0f}",
            )
    return table


def run_phases(
    command: str,
    spec: ClusterSpec,
    phases: list,
    state_dir: Path | None,
    quiet: bool,
    output: Output,
    dry_run: bool = False,
    **ctx_args: Any,
) -> apply.Context:
    from provisioner import apply
    from provisioner import preflight as pre

    ctx = apply.Context(
        spec=spec,
        cdir=cluster_dir(spec, state_dir),
        command=command,
        quiet=quiet or output is Output.json,
        say=lambda m: err.print(m),
        **ctx_args,
    )
    try:
        done = apply.execute(phases, ctx, dry_run=dry_run)
    except pre.PreflightFailed as exc:
        if output is not Output.json:
            err.print(preflight_table(exc.reports))
        fail(str(exc).splitlines())
    except ProvisionerError as exc:
        if output is Output.json:
            emit_json({"ok": False, "error": str(exc), "results": [r.as_dict() for r in ctx.results]})
        fail(exc.lines(), code=exc.exit_code)
    if dry_run:
        for line in done:
            out.print(line)
        return ctx
    if output is Output.json:
        emit_json(
            {
                "ok": True,
                "phases": done,
                "results": [r.as_dict() for r in ctx.results],
                "kubeconfig": str(ctx.cdir.kubeconfig),
            }
        )
    elif not quiet:
        err.print(stats_table(ctx.results))
        err.print(f"full log: {ctx.log}")
    return ctx


@cluster_app.command("create")
def cluster_create(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
    dry_run: DryRun = False,
    accept_host_key: AcceptHostKeyOpt = None,
) -> None:
    """Create (or converge) the cluster: preflight, certificates, then the playbook."""
    from provisioner import apply

    spec = load_spec(file)
    ctx = run_phases(
        "create",
        spec,
        apply.create_phases(),
        state_dir,
        quiet,
        output,
        dry_run,
        accept_host_keys=list(accept_host_key or []),
    )
    if not dry_run and output is Output.table:
        changed = sum(r.changed for r in ctx.results)
        out.print(f"cluster {spec.name} is up ({changed} changed tasks). Use it with:")
        out.print(f"  kubectl --kubeconfig {ctx.cdir.kubeconfig} get nodes")
        if spec.api_vip is None and len(spec.control_planes) > 1:
            cp = spec.control_planes[0]
            out.print(
                f"note: clients are pinned to one control plane, {cp.name} ({cp.address}); "
                f"set api_vip in {file} for an API address that survives losing it",
                soft_wrap=True,
                highlight=False,
            )


@cluster_app.command("validate")
def cluster_validate(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    output: OutputOpt = Output.table,
    junit: Annotated[
        Path | None, typer.Option("--junit", metavar="FILE", help="Also write pytest's JUnit XML report to FILE.")
    ] = None,
) -> None:
    """Run the shipped testinfra checks on every node (through the cluster's inventory);
    a per-node table, non-zero on failure."""
    from provisioner import validate

    spec = load_spec(file)
    try:
        results = validate.run(spec, cluster_dir(spec, state_dir).root, junit=junit)
    except ProvisionerError as exc:
        fail(exc.lines(), code=exc.exit_code)
    if output is Output.json:
        emit_json(
            [
                {
                    "node": r.name,
                    "address": r.address,
                    "ok": r.ok,
                    "passed": r.passed,
                    "failed": r.failed,
                    "skipped": r.skipped,
                }
                for r in results
            ]
        )
    else:
        table = Table(title=f"validation of {spec.name}", title_justify="left")
        for col in ("node", "result", "passed", "failed checks"):
            table.add_column(col)
        for r in results:
            table.add_row(
                r.name,
                "[green]ok[/green]" if r.ok else "[red]FAIL[/red]",
                str(len(r.passed)),
                "\n".join(f"{k}: {v}" for k, v in r.failed.items()) or "-",
            )
        out.print(table)
        if junit is not None:
            err.print(f"JUnit report: {junit}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@cluster_app.command("scale")
def cluster_scale(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
    dry_run: DryRun = False,
    accept_host_key: AcceptHostKeyOpt = None,
) -> None:
    """Nodes added to the cluster file join; existing nodes only learn their new BGP peers."""
    from provisioner import apply

    spec = load_spec(file)
    run_phases(
        "scale",
        spec,
        apply.scale_phases(),
        state_dir,
        quiet,
        output,
        dry_run,
        accept_host_keys=list(accept_host_key or []),
    )
    if not dry_run and output is Output.table:
        out.print(f"cluster {spec.name}: {len(spec.nodes)} nodes")


@cluster_app.command("upgrade")
def cluster_upgrade(
    to: Annotated[str, typer.Option("--to", help="The Kubernetes version to upgrade to (one minor at most).")],
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    serial: Annotated[int, typer.Option("--serial", help="Workers upgraded at once.")] = 1,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
    dry_run: DryRun = False,
) -> None:
    """Upgrade node by node (control planes first): drain, swap binaries, restart, Ready, uncordon.

    An etcd snapshot is taken first; interrupted, a re-run continues where it stopped.
    """
    from provisioner import apply

    spec = load_spec(file)
    target = spec.model_copy(update={"kubernetes": spec.kubernetes.model_copy(update={"version": to})})
    run_phases(
        "upgrade",
        target,
        apply.upgrade_phases(to),
        state_dir,
        quiet,
        output,
        dry_run,
        extravars={"upgrade_serial": serial},
    )
    if not dry_run and output is Output.table:
        out.print(f"cluster {spec.name} runs {to}. Set `kubernetes: {{version: {to}}}` in {file}.")


@cluster_app.command("remove-node")
def cluster_remove_node(
    names: Annotated[list[str], typer.Argument(help="Nodes to take out (workers, control planes, etcd members).")],
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    yes: Yes = False,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
) -> None:
    """Cordon, drain and delete nodes, clean them, and update the others (BGP peers, API servers).

    For an etcd member, `etcd member remove` comes first, refused when the remaining
    members could not keep quorum.
    """
    from provisioner import apply

    spec = load_spec(file)
    confirm(yes, "cluster remove-node drains and wipes the nodes", f"Drain, delete and wipe {', '.join(names)}?")
    run_phases("remove-node", spec, apply.remove_phases(list(names)), state_dir, quiet, output)
    if output is Output.table:
        out.print(f"{', '.join(names)} removed. Now delete {'them' if len(names) > 1 else 'it'} from {file}.")


@cluster_app.command("reset")
def cluster_reset(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    yes: Yes = False,
    skip_backup: Annotated[bool, typer.Option("--skip-backup", help="No etcd snapshot first.")] = False,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
) -> None:
    """Remove everything create installed from every node (an etcd snapshot is taken first).

    The cluster directory (CAs, certificates, kubeconfig, snapshots) is kept, so that
    `cluster create` can build the cluster again with the same identity.
    """
    from provisioner import apply

    spec = load_spec(file)
    confirm(
        yes,
        "cluster reset removes Kubernetes from every node",
        f"Remove Kubernetes and all its data from {len(spec.nodes)} nodes of {spec.name}?",
    )
    run_phases("reset", spec, apply.reset_phases(backup=not skip_backup), state_dir, quiet, output)
    if output is Output.table:
        out.print(f"cluster {spec.name} was reset; its cluster directory (CAs, snapshots) is kept")


etcd_app = typer.Typer(help="etcd snapshots.", no_args_is_help=True)
cluster_app.add_typer(etcd_app, name="etcd")
certs_app = typer.Typer(help="Certificates of the cluster.", no_args_is_help=True)
cluster_app.add_typer(certs_app, name="certs")


@etcd_app.command("backup")
def etcd_backup(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
) -> None:
    """Take an etcd snapshot into the cluster directory's backups/."""
    from provisioner import apply

    spec = load_spec(file)
    ctx = run_phases("etcd-backup", spec, apply.backup_phases(), state_dir, quiet, output)
    if output is Output.table:
        out.print(ctx.extravars["etcd_backup_file"])


@etcd_app.command("restore")
def etcd_restore(
    snapshot: Annotated[Path, typer.Argument(help="A snapshot taken by `cluster etcd backup`.")],
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    yes: Yes = False,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
) -> None:
    """Bring every etcd member back from SNAPSHOT (the API servers pause meanwhile)."""
    from provisioner import apply

    spec = load_spec(file)
    if not snapshot.is_file():
        fail(f"snapshot {snapshot} does not exist; take one with `cluster etcd backup`", code=2)
    confirm(
        yes,
        "cluster etcd restore rolls the cluster back to the snapshot",
        f"Roll {spec.name} back to {snapshot.name}? Changes made since are lost.",
    )
    run_phases("etcd-restore", spec, apply.restore_phases(snapshot.resolve()), state_dir, quiet, output)
    if output is Output.table:
        out.print(f"etcd restored from {snapshot}; the old data directories are kept as /var/lib/etcd.before-*")


@certs_app.command("check")
def certs_check(
    file: FileOpt = Path("cluster.yaml"), state_dir: StateOpt = None, output: OutputOpt = Output.table
) -> None:
    """Expiry of every certificate in the cluster directory; non-zero if one expires within 30 days."""
    from provisioner import pki

    spec = load_spec(file)
    rows = pki.expiry(cluster_dir(spec, state_dir).pki)
    if not rows:
        fail(f"no certificates in {cluster_dir(spec, state_dir).pki}; run `cluster create` first")
    if output is Output.json:
        emit_json(rows)
    else:
        table = Table(title=f"certificates of {spec.name}", title_justify="left")
        for col in ("certificate", "subject", "expires", "days left"):
            table.add_column(col, justify="right" if col == "days left" else "left")
        for r in rows:
            style = "red" if r["days_left"] < 30 else ""
            table.add_row(
                r["path"],
                r["subject"],
                r["expires"],
                f"[{style}]{r['days_left']}[/{style}]" if style else str(r["days_left"]),
            )
        out.print(table)
    if any(r["days_left"] < 30 for r in rows):
        raise typer.Exit(1)


@certs_app.command("renew")
def certs_renew(
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    yes: Yes = False,
    quiet: Quiet = False,
    output: OutputOpt = Output.table,
) -> None:
    """Re-issue every component certificate (same CAs) and roll them out node by node."""
    from provisioner import apply

    spec = load_spec(file)
    confirm(
        yes,
        "cluster certs renew restarts every component once",
        f"Re-issue the certificates of {spec.name} and restart its components one by one?",
    )
    run_phases("certs-renew", spec, apply.renew_phases(), state_dir, quiet, output)
    if output is Output.table:
        out.print("certificates renewed; `cluster certs check` shows the new dates")


# -- chaos ---------------------------------------------------------------------------------


class ChaosExperiment(StrEnum):
    """spec.CHAOS_EXPERIMENTS (repeated here: the CLI must not import pydantic to start)."""

    kill_pod = "kill-pod"
    kill_node = "kill-node"
    kill_control_plane = "kill-control-plane"
    kill_etcd_leader = "kill-etcd-leader"
    partition_node = "partition-node"
    stop_kubelet = "stop-kubelet"


@cluster_app.command("chaos")
def cluster_chaos(
    experiment: Annotated[
        ChaosExperiment | None, typer.Option("--experiment", "-e", help="The fault to inject.", show_default=False)
    ] = None,
    file: FileOpt = Path("cluster.yaml"),
    state_dir: StateOpt = None,
    target: Annotated[
        str, typer.Option("--target", metavar="NODE|auto", help="The node to hit (kill-pod: whose canary pod).")
    ] = "auto",
    duration: Annotated[
        int | None,
        typer.Option(
            "--duration",
            min=1,
            max=3600,
            help="Seconds the fault lasts (default: until the Node is NotReady; 20 s for kill-etcd-leader).",
        ),
    ] = None,
    yes: Yes = False,
    report: Annotated[
        Path | None, typer.Option("--report", metavar="DIR", help="Write a JSON report and a PNG timeline into DIR.")
    ] = None,
    skip_validate: Annotated[
        bool, typer.Option("--skip-validate", help="Leave `cluster validate` out of the steady state (faster).")
    ] = False,
    undo: Annotated[
        bool, typer.Option("--undo", help="Undo whatever fault a node still carries (after a lost controller).")
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Inject one fault, measure detection and recovery against the hypothesis, undo it.

    Experiments: kill-pod, kill-node, kill-control-plane, kill-etcd-leader, partition-node,
    stop-kubelet. Refused (exit 2) when it would cost etcd quorum or the last control plane,
    leave the canary no node, or when the steady state does not hold; exit 3 when a limit of
    the hypothesis (the cluster file's `chaos.limits`) is missed. Every fault is undone by a
    timer on the node itself too, even if this command dies.
    """
    from provisioner.chaos import blast, experiments, hypothesis

    spec = load_spec(file)
    cdir = cluster_dir(spec, state_dir)
    if undo:
        from provisioner.chaos import runner

        try:
            done = runner.undo_all(spec, cdir, err)
        except ProvisionerError as exc:
            fail(exc.lines(), code=exc.exit_code)
        if output is Output.json:
            emit_json(done)
        else:
            out.print(f"undone on: {', '.join(done['undone']) or 'no node had a fault left'}")
        return
    if experiment is None:
        fail(f"--experiment: name one of {', '.join(e.value for e in ChaosExperiment)}", code=2)
    e = experiments.get(experiment.value)
    try:
        blast.static(spec, e, target)
    except blast.Refused as exc:
        fail(exc.lines(), code=2)
    from provisioner.chaos import runner  # ansible-runner, paramiko: only once the guard let it through

    def ask(question: str) -> None:
        confirm(yes, f"cluster chaos injects {e.name} into {spec.name}", question)

    opts = runner.Options(
        e.name,
        target,
        duration,
        report,
        validate=not skip_validate,
        live=output is Output.table and err.is_terminal,
        confirm=ask,
    )
    try:
        result = runner.run(spec, cdir, opts, err)
    except KeyboardInterrupt:
        fail("interrupted; a fault already injected was undone (its node's own timer would undo it too)", code=130)
    except ProvisionerError as exc:
        if output is Output.json:
            emit_json({"ok": False, "exit_code": exc.exit_code, "error": str(exc)})
        fail(exc.lines(), code=exc.exit_code)
    checks = result.pop("_checks")
    result.pop("_marks")
    result.pop("_window")
    if output is Output.json:
        emit_json({"ok": result["hypothesis_holds"], **result})
    else:
        from provisioner.chaos.report import checks_table

        out.print(checks_table(e.name, result["target"], checks, result["hypothesis_holds"]))
        undone = f"undone by the {result['undone_by']}" if result["undone_by"] else "nothing to undo"
        left = f"; left behind: {', '.join(result['left_behind'])}" if result["left_behind"] else ""
        out.print(f"fault {undone}{left}. Full log: {result['log']}")
        if "report" in result:
            out.print(f"report: {result['report']['json']}, {result['report']['png']}")
    if not result["hypothesis_holds"]:
        fail(hypothesis.missed_error(e.name, checks).lines(), code=hypothesis.HypothesisMissed.exit_code)


# -- inventory ---------------------------------------------------------------------------


@inventory_app.command("generate")
def inventory_generate(
    file: FileOpt = Path("cluster.yaml"),
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of the cluster directory.")
    ] = None,
    state_dir: StateOpt = None,
    downloads_opt: Annotated[
        bool, typer.Option("--downloads/--no-downloads", help="Read the download list from files_repo.")
    ] = True,
) -> None:
    """Write hosts.yaml + group_vars/ (and, in the cluster directory, ansible.cfg): all that
    plain ansible-playbook needs. The download list is included when files_repo answers."""
    from provisioner import ansible_config, artifacts
    from provisioner import inventory as inv

    spec = load_spec(file)
    cdir = cluster_dir(spec, state_dir)
    try:
        blocks = inv.assign_pod_blocks(spec, cdir.read_blocks())
    except inv.BlockError as exc:
        fail(str(exc), code=2)
    downloads = None
    try:
        if not downloads_opt:
            raise ProvisionerError("--no-downloads")
        manifest = artifacts.fetch_manifest(spec.artifacts.files_repo, timeout=3)
        downloads = artifacts.for_cluster(manifest, spec)
    except ProvisionerError as exc:
        if out_dir is None:
            err.print(f"[yellow]warning:[/yellow] no download list in the inventory: {exc}", highlight=False)
    target = out_dir or cdir.ensure().inventory
    if out_dir is None:
        cdir.write_blocks(blocks)
        ansible_config.write(cdir.root, len(spec.nodes))
    inv.write(inv.build(spec, blocks, cdir.root, downloads), target)
    out.print(f"inventory written to {target}")


# -- lab -----------------------------------------------------------------------------------

LabName = Annotated[str, typer.Option("--name", help="Lab (and cluster) name.")]


def _lab(name: str, state_dir: Path | None) -> Lab:
    from provisioner.lab.manager import Lab

    return Lab(name, state_dir)


@lab_app.command("up")
def lab_up(
    nodes: Annotated[int, typer.Option("--nodes", help="How many nodes.")] = 3,
    control_planes: Annotated[int, typer.Option("--control-planes", help="How many of them are control planes.")] = 1,
    name: LabName = "lab",
    subnet: Annotated[
        list[str] | None,
        typer.Option("--subnet", help="Bridge subnet (default 192.168.250.0/24); give it twice for a two-subnet lab."),
    ] = None,
    subnets: Annotated[
        int,
        typer.Option(
            "--subnets",
            help="1, or 2: the workers alternate between two bridges that the host routes between "
            "(the second subnet: the next /24, or the second --subnet); the cluster file says encapsulation "
            "vxlan, cross-subnet.",
        ),
    ] = 1,
    mirror_dir: Annotated[
        Path, typer.Option("--mirror-dir", help="Artifact mirror to serve to the nodes.")
    ] = DEFAULT_MIRROR,
    state_dir: StateOpt = None,
) -> None:
    """Bring up (or complete) a lab of machine-container nodes and write its cluster file."""
    lab = _lab(name, state_dir)
    given = subnet or []
    if len(given) > 2 or subnets not in (1, 2):
        fail("--subnets: a lab has 1 or 2 subnets (and --subnet is given at most twice)", code=2)
    first = given[0] if given else None
    second = given[1] if len(given) == 2 else None
    if subnets == 2 and second is None:
        from provisioner.lab.manager import DEFAULT_SUBNET, next_subnet

        st = lab.state()
        base = first or (st.subnet if st else DEFAULT_SUBNET)
        second = st.second_subnet if st and st.second_subnet else next_subnet(base)
    try:
        timings = lab.up(nodes, control_planes, first, mirror_dir, say=lambda m: err.print(m), second_subnet=second)
    except LabError as exc:
        fail(str(exc))
    err.print(f"lab {name}: {len(lab.status())} nodes up in {timings['nodes_up_s']:.1f}s")
    out.print(f"cluster file: {lab.cluster_file}")


@lab_app.command("down")
def lab_down(name: LabName = "lab", state_dir: StateOpt = None) -> None:
    """Stop and remove the nodes, the bridge, the apt proxy and the artifact server."""
    try:
        _lab(name, state_dir).down(say=lambda m: err.print(m))
    except LabError as exc:
        fail(str(exc))
    out.print(f"lab {name} is down")


@lab_app.command("status")
def lab_status(name: LabName = "lab", state_dir: StateOpt = None, output: OutputOpt = Output.table) -> None:
    """Nodes, addresses and state."""
    rows = _lab(name, state_dir).status()
    if output is Output.json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"there is no lab named {name}")
        return
    table = Table(title=f"lab {name}", title_justify="left")
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*r.values())
    out.print(table)


@lab_app.command("stop")
def lab_stop(node: str, name: LabName = "lab", state_dir: StateOpt = None) -> None:
    """Stop one node (an orderly poweroff)."""
    try:
        _lab(name, state_dir).stop_node(node)
    except LabError as exc:
        fail(str(exc))
    out.print(f"{node} stopped")


@lab_app.command("start")
def lab_start(node: str, name: LabName = "lab", state_dir: StateOpt = None) -> None:
    """Start one stopped node and wait for its sshd."""
    try:
        _lab(name, state_dir).start_node(node)
    except LabError as exc:
        fail(str(exc))
    out.print(f"{node} started")


# -- mirror --------------------------------------------------------------------------------

MirrorDir = Annotated[Path, typer.Option("--dir", help="The mirror directory.")]


@mirror_app.command("build")
def mirror_build(
    kubernetes: Annotated[
        str, typer.Option("--kubernetes", help="Comma-separated Kubernetes versions (default: every supported one).")
    ] = ",".join(SUPPORTED_KUBERNETES),
    directory: MirrorDir = DEFAULT_MIRROR,
) -> None:
    """Build (or bring up to date) every artifact a cluster needs, and the manifest.

    Components whose inputs did not change are taken from the cache ("cached"); a real build
    shows what it compiles and for how long (live on a terminal, a line every 30 s otherwise)."""
    from provisioner.mirror.build import Builder, ConsoleProgress, MirrorBuildError

    progress = ConsoleProgress(err)
    builder = Builder(mirror=directory, say=progress.say, live=progress.live)
    try:
        manifest = builder.build([v.strip() for v in kubernetes.split(",") if v.strip()])
    except MirrorBuildError as exc:
        fail(str(exc).splitlines())
    for key, seconds in builder.timings.items():
        err.print(f"  {key:<22} {seconds:7.1f}s  {builder.outcomes.get(key, '')}", highlight=False)
    out.print(f"mirror {directory}: {len(manifest.artifacts)} artifacts")


@mirror_app.command("verify")
def mirror_verify(directory: MirrorDir = DEFAULT_MIRROR) -> None:
    """Re-check the size and sha256 of every file in the manifest."""
    from provisioner.mirror.manifest import VerifyError, verify

    try:
        count = verify(directory)
    except VerifyError as exc:
        fail(str(exc).splitlines())
    out.print(f"mirror {directory}: {count} artifacts verified")


@mirror_app.command("serve")
def mirror_serve(
    address: Annotated[str, typer.Option("--address", help="ADDR:PORT to listen on.")] = "127.0.0.1:8088",
    directory: MirrorDir = DEFAULT_MIRROR,
) -> None:
    """Serve the mirror over HTTP (foreground; Ctrl-C stops it)."""
    from provisioner.mirror.serve import serve

    err.print(f"serving {directory} on http://{address}/")
    serve(address, directory)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
