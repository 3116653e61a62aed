"""Commands as lists of phases (k0sctl's model): each phase has a title, knows whether it
must run, can describe itself for a dry run, and runs. ``create`` is one convergent apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from provisioner import artifacts, inventory, pki, preflight
from provisioner.progress import PlaybookProgress
from provisioner.runner import PlaybookFailed, RunResult, run_playbook
from provisioner.spec import ClusterSpec
from provisioner.state import ClusterDir
from provisioner.versions import release


@dataclass
class Context:
    spec: ClusterSpec
    cdir: ClusterDir
    command: str
    quiet: bool = False
    say: Callable[[str], None] = print
    extravars: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None
    results: list[RunResult] = field(default_factory=list)
    reports: list[preflight.HostReport] = field(default_factory=list)
    log: Any = None

    def __post_init__(self) -> None:
        self.log = self.cdir.ensure().new_log(self.command)


class Phase(Protocol):
    title: str

    def should_run(self, ctx: Context) -> bool: ...

    def dry_run(self, ctx: Context) -> str: ...

    def run(self, ctx: Context) -> None: ...


class PreflightFailedError(Exception):
    pass


class Preflight:
    title = "preflight"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"check {len(ctx.spec.nodes)} hosts over SSH (read-only)"

    def run(self, ctx: Context) -> None:
        ctx.reports = preflight.run(ctx.spec)
        if not all(r.ok for r in ctx.reports):
            raise preflight.PreflightFailed(ctx.reports)


class Inventory:
    title = "inventory"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"write {ctx.cdir.inventory}"

    def run(self, ctx: Context) -> None:
        blocks = inventory.assign_pod_blocks(ctx.spec, ctx.cdir.read_blocks())
        ctx.cdir.write_blocks(blocks)
        inventory.write(inventory.build(ctx.spec, blocks, ctx.cdir.root), ctx.cdir.inventory)


class Certificates:
    title = "certificates"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"create missing CAs and certificates in {ctx.cdir.pki} (existing ones are kept)"

    def run(self, ctx: Context) -> None:
        svc_ip = inventory.cluster_vars(ctx.spec, ctx.cdir.root)["kube_service_ip"]
        made = pki.ensure(ctx.spec, ctx.cdir.pki, svc_ip, ctx.spec.api_lb.port)
        if made:
            ctx.say(f"certificates: created {len(made)} files")


class Artifacts:
    title = "artifacts"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"read {ctx.spec.artifacts.files_repo}/manifest.json"

    def run(self, ctx: Context) -> None:
        manifest = artifacts.fetch_manifest(ctx.spec.artifacts.files_repo)
        rel = release(ctx.spec.kubernetes.version)
        ctx.extravars["download_artifacts"] = artifacts.downloads(manifest, rel, ctx.spec.artifacts.files_repo)


@dataclass
class Playbook:
    playbook: str
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"playbook {self.playbook}"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"ansible-playbook {self.playbook}" + (f" --limit {ctx.limit}" if ctx.limit else "")

    def run(self, ctx: Context) -> None:
        def go(on_event: Callable[[dict[str, Any]], None] | None) -> RunResult:
            return run_playbook(
                self.playbook,
                ctx.cdir.inventory,
                ctx.cdir.runner,
                log_path=ctx.log,
                limit=ctx.limit,
                extravars=ctx.extravars,
                on_event=on_event,
            )

        if ctx.quiet:
            result = go(None)
        else:
            with PlaybookProgress(f"{ctx.command}: {self.playbook}") as progress:
                result = go(progress.handle)
        ctx.results.append(result)
        if not result.ok:
            raise PlaybookFailed(result)


class AdminKubeconfig:
    title = "admin kubeconfig"

    def should_run(self, ctx: Context) -> bool:
        return not ctx.cdir.kubeconfig.exists()

    def dry_run(self, ctx: Context) -> str:
        return f"write {ctx.cdir.kubeconfig} (0600)"

    def run(self, ctx: Context) -> None:
        pki.admin_kubeconfig(ctx.spec, ctx.cdir.pki, ctx.cdir.kubeconfig)


def create_phases() -> list[Phase]:
    return [Preflight(), Inventory(), Certificates(), Artifacts(), Playbook("cluster.yml"), AdminKubeconfig()]


def execute(phases: list[Phase], ctx: Context, dry_run: bool = False) -> list[str]:
    """Run the phases in order; the first failure stops the command. Returns what ran."""
    done = []
    for phase in phases:
        if not phase.should_run(ctx):
            continue
        if dry_run:
            done.append(f"{phase.title}: {phase.dry_run(ctx)}")
            continue
        phase.run(ctx)
        done.append(phase.title)
    return done
