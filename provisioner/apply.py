"""Commands as lists of phases (k0sctl's model): each phase has a title, knows whether it
must run, can describe itself for a dry run, and runs. Facts are gathered from the nodes
first (playbooks/facts.yml) and every guard decides from them (guards.py); then the
inventory is written and the same playbook that plain ``ansible-playbook`` would run is
run through ansible-runner. Python plans and reports; Ansible acts and gathers facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner import ansible_config, artifacts, defaults, guards, inventory, pki, preflight
from provisioner.errors import InputError
from provisioner.facts import FACTS_TASK, ClusterFacts, from_results
from provisioner.progress import PlaybookProgress
from provisioner.runner import PlaybookFailed, RunResult, run_playbook
from provisioner.spec import ClusterSpec, Node
from provisioner.state import ClusterDir
from provisioner.versions import SUPPORTED_KUBERNETES, minor


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
    accept_host_keys: list[str] = field(default_factory=list)
    facts: ClusterFacts | None = None
    downloads: dict[str, list[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        self.log = self.cdir.ensure().new_log(self.command)

    def require_facts(self) -> ClusterFacts:
        if self.facts is None:
            raise RuntimeError("a guard ran before GatherFacts")  # a bug in the phase lists
        return self.facts


class Phase(Protocol):
    title: str

    def should_run(self, ctx: Context) -> bool: ...

    def dry_run(self, ctx: Context) -> str: ...

    def run(self, ctx: Context) -> None: ...


class Preflight:
    """Read-only checks of the hosts over SSH before any change; host keys are pinned in
    the cluster's known_hosts. ``leave_out`` names nodes not to check (remove-node: the
    node being removed may already be gone)."""

    title = "preflight"

    def __init__(self, leave_out: list[str] | None = None):
        self.leave_out = set(leave_out or [])

    def _nodes(self, ctx: Context) -> list[Node]:
        return [n for n in ctx.spec.nodes if n.name not in self.leave_out]

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        self.run(ctx)
        return f"{len(ctx.reports)} hosts checked over SSH (read-only): ok"

    def run(self, ctx: Context) -> None:
        ctx.reports = preflight.run(
            ctx.spec, self._nodes(ctx), cluster_dir=ctx.cdir.root, accept=set(ctx.accept_host_keys)
        )
        if not all(r.ok for r in ctx.reports):
            raise preflight.PreflightFailed(ctx.reports)


def write_inventory(ctx: Context) -> Path:
    """hosts.yaml + group_vars/all.yml + ansible.cfg in the cluster directory. Pod blocks:
    what the nodes carry (facts) wins over the controller's cache, which never renumbers."""
    known = ctx.cdir.read_blocks()
    if ctx.facts is not None:
        known |= ctx.facts.pod_blocks()
    blocks = inventory.assign_pod_blocks(ctx.spec, known)
    ctx.cdir.write_blocks(blocks)
    inventory.write(inventory.build(ctx.spec, blocks, ctx.cdir.root, ctx.downloads), ctx.cdir.inventory)
    ansible_config.write(ctx.cdir.root, len(ctx.spec.nodes))
    return ctx.cdir.inventory


def playbook(ctx: Context, name: str, collect: str | None = None, title: str | None = None) -> RunResult:
    """Run one playbook of the package with the cluster's inventory and ansible.cfg."""

    def go(on_event: Callable[[dict[str, Any]], None] | None) -> RunResult:
        return run_playbook(
            name,
            ctx.cdir.inventory,
            ctx.cdir.runner,
            log_path=ctx.log,
            limit=ctx.limit,
            extravars=ctx.extravars,
            on_event=on_event,
            config=ctx.cdir.ansible_cfg,
            collect=collect,
        )

    if ctx.quiet:
        return go(None)
    with PlaybookProgress(title or f"{ctx.command}: {name}") as progress:
        return go(progress.handle)


class GatherFacts:
    """What the cluster really runs, read from the nodes (read-only, so it runs in a dry
    run too): installed versions, etcd members, Node objects, CA fingerprints, pod blocks."""

    title = "gather facts"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        self.run(ctx)
        f = ctx.require_facts()
        versions = ", ".join(f"{v} ({len(n)} nodes)" for v, n in f.kube_versions().items()) or "nothing installed"
        return f"{len(f.installed)} of {len(f.nodes)} nodes run the cluster: {versions}"

    def run(self, ctx: Context) -> None:
        write_inventory(ctx)
        result = playbook(ctx, "facts.yml", collect=FACTS_TASK, title=f"{ctx.command}: facts")
        ctx.facts = from_results([n.name for n in ctx.spec.nodes], result.collected)


class Guard:
    """Refuse, before any change, what the cluster as it is does not allow (guards.py)."""

    title = "guards"

    def __init__(self, *checks: Callable[[Context], list[str]]):
        self.checks = checks

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        self.run(ctx)
        return "the cluster allows it"

    def run(self, ctx: Context) -> None:
        problems = [p for check in self.checks for p in check(ctx)]
        if problems:
            raise guards.GuardError(problems)


def pki_guard(ctx: Context) -> list[str]:
    facts = ctx.require_facts()
    return guards.pki(facts, guards.controller_cas(ctx.cdir.pki), ctx.cdir.pki)


def version_guard(ctx: Context) -> list[str]:
    return guards.version(ctx.spec, ctx.require_facts())


def network_guard(ctx: Context) -> list[str]:
    return guards.encapsulation(ctx.spec, ctx.require_facts())


def membership_guard(ctx: Context) -> list[str]:
    return guards.reachable(ctx.require_facts()) + guards.membership(ctx.spec, ctx.require_facts())


class Artifacts:
    title = "artifacts"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        self.run(ctx)
        return f"{ctx.spec.artifacts.files_repo}/manifest.json has every artifact"

    def run(self, ctx: Context) -> None:
        manifest = artifacts.fetch_manifest(ctx.spec.artifacts.files_repo)
        ctx.downloads = artifacts.for_cluster(manifest, ctx.spec)


class Inventory:
    title = "inventory"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"write {ctx.cdir.inventory} and {ctx.cdir.ansible_cfg}"

    def run(self, ctx: Context) -> None:
        write_inventory(ctx)


class Certificates:
    title = "certificates"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"create missing CAs and certificates in {ctx.cdir.pki} (existing ones are kept)"

    def run(self, ctx: Context) -> None:
        made = pki.ensure(ctx.spec, ctx.cdir.pki, defaults.service_ip(ctx.spec), ctx.spec.api_lb.port)
        if made:
            ctx.say(f"certificates: created {len(made)} files")


@dataclass
class Playbook:
    playbook: str
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"playbook {self.playbook}"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        extra = "".join(f" -e {k}={v}" for k, v in ctx.extravars.items() if isinstance(v, str | int))
        return f"ansible-playbook -i {ctx.cdir.inventory} {self.playbook}{extra}" + (
            f" --limit {ctx.limit}" if ctx.limit else ""
        )

    def run(self, ctx: Context) -> None:
        result = playbook(ctx, self.playbook)
        ctx.results.append(result)
        if not result.ok:
            raise PlaybookFailed(result)


class AdminKubeconfig:
    """Written once; afterwards only where it points follows the cluster file (an API VIP
    added or removed), its credentials stay."""

    title = "admin kubeconfig"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        if ctx.cdir.kubeconfig.exists():
            return f"point {ctx.cdir.kubeconfig} at {pki.api_endpoint(ctx.spec)} (credentials kept)"
        return f"write {ctx.cdir.kubeconfig} (0600)"

    def run(self, ctx: Context) -> None:
        existed = ctx.cdir.kubeconfig.exists()
        if pki.admin_kubeconfig(ctx.spec, ctx.cdir.pki, ctx.cdir.kubeconfig) and existed:
            ctx.say(f"admin kubeconfig: {ctx.cdir.kubeconfig} now points at {pki.api_endpoint(ctx.spec)}")


class EtcdBackup:
    """An etcd snapshot from the first member into ``backups/`` of the cluster directory."""

    title = "etcd snapshot"

    def __init__(self, reason: str):
        self.reason = reason

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"snapshot etcd into {ctx.cdir.backups}"

    def run(self, ctx: Context) -> None:
        name = f"etcd-{time.strftime('%Y%m%d-%H%M%S')}-{self.reason}.db"
        ctx.cdir.backups.mkdir(parents=True, exist_ok=True)
        ctx.extravars["etcd_backup_name"] = name
        Playbook("etcd-backup.yml").run(ctx)
        ctx.extravars["etcd_backup_file"] = str(ctx.cdir.backups / name)
        ctx.say(f"etcd snapshot: {ctx.cdir.backups / name}")


class VersionError(InputError):
    pass


class UpgradeTarget:
    """--to names a supported version (checked before anything is templated for it)."""

    title = "upgrade target"

    def __init__(self, target: str):
        self.target = target

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        self.run(ctx)
        return f"{self.target} is supported"

    def run(self, ctx: Context) -> None:
        if self.target not in SUPPORTED_KUBERNETES:
            raise VersionError(f"--to: {self.target} is not supported; use one of {', '.join(SUPPORTED_KUBERNETES)}")


def upgrade_skew(target: str) -> Callable[[Context], list[str]]:
    """One minor at a time, never down, from the version the nodes really run (facts)."""

    def check(ctx: Context) -> list[str]:
        running = guards.running_version(ctx.require_facts())
        if running is None:
            return [f"no node of {ctx.spec.name} runs Kubernetes; run `cluster create` first"]
        if guards.version_key(target) < guards.version_key(running):
            return [f"--to: {target} is older than the running {running}; downgrades are not supported"]
        if minor(target)[1] - minor(running)[1] > 1:
            return [f"--to: {running} -> {target} skips a minor; upgrade one minor at a time"]
        return []

    return check


def upgrade_phases(target: str) -> list[Phase]:
    """The target is supported, preflight, facts, skew from what the nodes run, the
    target's artifacts from the mirror, a snapshot, then node by node. The context's spec
    already names the target version."""
    return [
        UpgradeTarget(target),
        Preflight(),
        GatherFacts(),
        Guard(pki_guard, upgrade_skew(target)),
        Artifacts(),
        Inventory(),
        EtcdBackup("before-upgrade"),
        Playbook("upgrade.yml"),
    ]


class ScalePlaybook:
    """scale.yml for the nodes that run nothing of the cluster yet (from the facts)."""

    title = "playbook scale.yml"

    def _added(self, ctx: Context) -> list[str]:
        added, problems = guards.new_nodes(ctx.spec, ctx.require_facts())
        if problems:
            raise guards.GuardError(problems)
        return added

    def should_run(self, ctx: Context) -> bool:
        return bool(self._added(ctx))

    def dry_run(self, ctx: Context) -> str:
        added = self._added(ctx)
        new = [ctx.spec.node(n) for n in added]
        extra = []
        if etcd := [n.name for n in new if "etcd" in n.roles]:
            extra.append(f"etcd member add {', '.join(etcd)} (one at a time)")
        if any("control-plane" in n.roles or "etcd" in n.roles for n in new):
            extra.append("rolling API server update on the existing control planes")
        return f"ansible-playbook scale.yml -e scale_new_nodes={','.join(added)}" + "".join(f"; {e}" for e in extra)

    def run(self, ctx: Context) -> None:
        ctx.extravars["scale_new_nodes"] = ",".join(self._added(ctx))
        Playbook("scale.yml").run(ctx)


def create_phases() -> list[Phase]:
    return [
        Preflight(),
        GatherFacts(),
        Guard(pki_guard, version_guard, membership_guard, network_guard),
        Artifacts(),
        Inventory(),
        Certificates(),
        Playbook("cluster.yml"),
        AdminKubeconfig(),
    ]


def scale_phases() -> list[Phase]:
    return [
        Preflight(),
        GatherFacts(),
        Guard(pki_guard, version_guard, network_guard),
        Artifacts(),
        Inventory(),
        Certificates(),
        ScalePlaybook(),
    ]


class EtcdRestore:
    title = "etcd restore"

    def __init__(self, snapshot: Path):
        self.snapshot = snapshot

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"restore every etcd member from {self.snapshot} (old data kept aside)"

    def run(self, ctx: Context) -> None:
        ctx.extravars["etcd_restore_snapshot"] = str(self.snapshot)
        ctx.extravars["etcd_restore_stamp"] = "restore-" + time.strftime("%Y%m%d-%H%M%S")
        Playbook("etcd-restore.yml").run(ctx)


def restore_phases(snapshot: Path) -> list[Phase]:
    return [Preflight(), GatherFacts(), Guard(pki_guard), Artifacts(), Inventory(), EtcdRestore(snapshot)]


class RenewCertificates:
    title = "renew certificates"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"re-issue the component certificates in {ctx.cdir.pki} (same CAs)"

    def run(self, ctx: Context) -> None:
        made = pki.ensure(ctx.spec, ctx.cdir.pki, defaults.service_ip(ctx.spec), ctx.spec.api_lb.port, renew=True)
        pki.admin_kubeconfig(ctx.spec, ctx.cdir.pki, ctx.cdir.kubeconfig, renew=True)
        ctx.say(f"certificates: re-issued {len(made)} files")


def renew_phases() -> list[Phase]:
    return [
        Preflight(),
        GatherFacts(),
        Guard(pki_guard),
        Artifacts(),
        Inventory(),
        RenewCertificates(),
        Playbook("certs-renew.yml"),
    ]


class RemoveNodes:
    title = "playbook remove-node.yml"

    def __init__(self, names: list[str]):
        self.names = names

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        etcd = [n for n in self.names if "etcd" in ctx.spec.node(n).roles]
        return (
            (f"etcd member remove {', '.join(etcd)} (refused if quorum would break); " if etcd else "")
            + f"ansible-playbook remove-node.yml -e removed_nodes={','.join(self.names)}: drain and delete, "
            "clean them, update the BGP peers and API servers of the others"
        )

    def run(self, ctx: Context) -> None:
        ctx.extravars["removed_nodes"] = ",".join(self.names)
        Playbook("remove-node.yml").run(ctx)
        blocks = ctx.cdir.read_blocks()
        ctx.cdir.write_blocks({k: v for k, v in blocks.items() if k not in self.names})


def remove_phases(names: list[str]) -> list[Phase]:
    def removable(ctx: Context) -> list[str]:
        facts = ctx.require_facts()
        return guards.reachable(facts, leave_out=names) + guards.removable(ctx.spec, facts, names)

    return [
        Preflight(leave_out=names),
        GatherFacts(),
        Guard(pki_guard, removable),
        Artifacts(),
        Inventory(),
        RemoveNodes(names),
    ]


def backup_phases() -> list[Phase]:
    return [Preflight(), Artifacts(), Inventory(), EtcdBackup("manual")]


def reset_phases(backup: bool = True) -> list[Phase]:
    phases: list[Phase] = [Preflight(), GatherFacts(), Guard(pki_guard), Artifacts(), Inventory()]
    if backup:
        phases.append(EtcdBackup("before-reset"))
    return [*phases, Playbook("reset.yml")]


def execute(phases: list[Phase], ctx: Context, dry_run: bool = False) -> list[str]:
    """Run the phases in order; the first failure stops the command. Returns what ran.
    In a dry run, read-only phases (preflight, facts, guards) run for real, so that what
    is shown is what would happen; the others only describe themselves."""
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
