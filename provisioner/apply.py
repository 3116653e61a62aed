"""Commands as lists of phases (k0sctl's model): each phase has a title, knows whether it
must run, can describe itself for a dry run, and runs. ``create`` is one convergent apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner import artifacts, inventory, pki, preflight
from provisioner.errors import InputError
from provisioner.progress import PlaybookProgress
from provisioner.runner import PlaybookFailed, RunResult, run_playbook
from provisioner.spec import ClusterSpec, Node
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
    accept_host_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = self.cdir.ensure().new_log(self.command)


class Phase(Protocol):
    title: str

    def should_run(self, ctx: Context) -> bool: ...

    def dry_run(self, ctx: Context) -> str: ...

    def run(self, ctx: Context) -> None: ...


class Preflight:
    """Read-only checks of the hosts over SSH before any change. ``leave_out`` names nodes
    not to check (remove-node: the node being removed may already be gone)."""

    title = "preflight"

    def __init__(self, leave_out: list[str] | None = None):
        self.leave_out = set(leave_out or [])

    def _nodes(self, ctx: Context) -> list[Node]:
        return [n for n in ctx.spec.nodes if n.name not in self.leave_out]

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"check {len(self._nodes(ctx))} hosts over SSH (read-only)"

    def run(self, ctx: Context) -> None:
        ctx.reports = preflight.run(
            ctx.spec, self._nodes(ctx), cluster_dir=ctx.cdir.root, accept=set(ctx.accept_host_keys)
        )
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
        import time

        name = f"etcd-{time.strftime('%Y%m%d-%H%M%S')}-{self.reason}.db"
        ctx.cdir.backups.mkdir(parents=True, exist_ok=True)
        ctx.extravars["etcd_backup_name"] = name
        ctx.extravars["etcd_backup_dest"] = str(ctx.cdir.backups)
        Playbook("etcd-backup.yml").run(ctx)
        ctx.extravars["etcd_backup_file"] = str(ctx.cdir.backups / name)
        ctx.say(f"etcd snapshot: {ctx.cdir.backups / name}")


class RecordNodes:
    """Remember the nodes this command left in the cluster (scale compares against it)."""

    title = "record nodes"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"write {ctx.cdir.applied_file}"

    def run(self, ctx: Context) -> None:
        ctx.cdir.write_applied({n.name: {"address": n.address, "roles": list(n.roles)} for n in ctx.spec.nodes})
        ctx.cdir.write_version(ctx.spec.kubernetes.version)


class VersionError(InputError):
    pass


class VersionGuard:
    """create and scale converge to the file's version; they never upgrade or downgrade."""

    title = "version check"

    def should_run(self, ctx: Context) -> bool:
        return ctx.cdir.read_version() is not None

    def dry_run(self, ctx: Context) -> str:
        return f"the cluster runs {ctx.cdir.read_version()}; the file says {ctx.spec.kubernetes.version}"

    def run(self, ctx: Context) -> None:
        running, wanted = ctx.cdir.read_version(), ctx.spec.kubernetes.version
        if running != wanted:
            raise VersionError(
                f"kubernetes.version: the cluster runs {running} and the file says {wanted}; "
                + (
                    f"upgrade with `provisioner cluster upgrade --to {wanted}`"
                    if minor_key(wanted) > minor_key(running)
                    else f"set kubernetes.version: {running} in the file (downgrades are not supported)"
                )
            )


def minor_key(version: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in (version or "v0.0.0").lstrip("v").split("."))


class UpgradeCheck:
    """One minor at a time, to a supported version that the mirror has."""

    title = "upgrade check"

    def __init__(self, target: str):
        self.target = target

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"check that {ctx.cdir.read_version()} -> {self.target} is one minor at most"

    def run(self, ctx: Context) -> None:
        from provisioner.versions import SUPPORTED_KUBERNETES, minor

        running = ctx.cdir.read_version()
        if running is None:
            raise VersionError(f"{ctx.cdir.root} records no Kubernetes version; run `cluster create` first")
        if self.target not in SUPPORTED_KUBERNETES:
            raise VersionError(f"--to: {self.target} is not supported; use one of {', '.join(SUPPORTED_KUBERNETES)}")
        if minor_key(self.target) < minor_key(running):
            raise VersionError(f"--to: {self.target} is older than the running {running}; downgrades are not supported")
        if minor(self.target)[1] - minor(running)[1] > 1:
            raise VersionError(f"--to: {running} -> {self.target} skips a minor; upgrade one minor at a time")


class RecordVersion:
    """Remember the Kubernetes version the cluster now runs (create and scale hold to it)."""

    title = "record version"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"write {ctx.cdir.version_file} ({ctx.spec.kubernetes.version})"

    def run(self, ctx: Context) -> None:
        ctx.cdir.write_version(ctx.spec.kubernetes.version)


def upgrade_phases(target: str) -> list[Phase]:
    """Skew check, preflight, the target's artifacts from the mirror, a snapshot, then node
    by node. The context's spec already names the target version."""
    return [
        UpgradeCheck(target),
        Preflight(),
        Inventory(),
        Artifacts(),
        EtcdBackup("before-upgrade"),
        Playbook("upgrade.yml"),
        RecordVersion(),
    ]


class ScaleError(InputError):
    pass


def new_nodes(ctx: Context) -> list[str]:
    """Nodes in the file that the cluster does not have yet; refuse what scale cannot do."""
    applied = ctx.cdir.read_applied()
    if not applied:
        raise ScaleError(f"{ctx.cdir.root} records no nodes; run `cluster create` first")
    names = {n.name for n in ctx.spec.nodes}
    gone = sorted(set(applied) - names)
    if gone:
        raise ScaleError(f"nodes {', '.join(gone)} are no longer in the file; use `cluster remove-node` for them")
    for n in ctx.spec.nodes:
        old = applied.get(n.name)
        if old and (old["address"] != n.address or sorted(old["roles"]) != sorted(n.roles)):  # type: ignore[arg-type]
            raise ScaleError(f"node {n.name}: its address or roles changed; scale only adds nodes")
    return [n.name for n in ctx.spec.nodes if n.name not in applied]


def scale_vars(ctx: Context) -> dict[str, Any]:
    """What scale.yml needs: the new nodes by role, and who else must learn of them."""
    added = new_nodes(ctx)
    applied = ctx.cdir.read_applied()
    new = [ctx.spec.node(n) for n in added]
    new_etcd = [n.name for n in new if "etcd" in n.roles]
    new_cps = [n.name for n in new if "control-plane" in n.roles]
    had = {name: list(v["roles"]) for name, v in applied.items()}  # type: ignore[call-overload]
    old_etcd = [name for name, roles in had.items() if "etcd" in roles]
    old_cps = [name for name, roles in had.items() if "control-plane" in roles]
    return {
        "scale_new_nodes": added,
        "scale_new_etcd": new_etcd,
        "scale_new_control_planes": new_cps,
        # their API server certificate gains the new addresses; --etcd-servers the new members
        "scale_existing_control_planes": old_cps if new_cps or new_etcd else [],
        "scale_etcd_via": old_etcd[0] if old_etcd else "",
    }


class ScalePlaybook:
    title = "playbook scale.yml"

    def should_run(self, ctx: Context) -> bool:
        return bool(new_nodes(ctx))

    def dry_run(self, ctx: Context) -> str:
        v = scale_vars(ctx)
        extra = []
        if v["scale_new_etcd"]:
            extra.append(f"etcd member add {', '.join(v['scale_new_etcd'])} (one at a time)")
        if v["scale_existing_control_planes"]:
            extra.append(f"rolling API server update on {', '.join(v['scale_existing_control_planes'])}")
        return f"ansible-playbook scale.yml for {', '.join(v['scale_new_nodes'])}" + "".join(f"; {e}" for e in extra)

    def run(self, ctx: Context) -> None:
        ctx.extravars.update(scale_vars(ctx))
        Playbook("scale.yml").run(ctx)


class MembershipGuard:
    """create on a running cluster must not bootstrap new etcd members as a new cluster:
    members join through `cluster scale` (member add)."""

    title = "membership check"

    def should_run(self, ctx: Context) -> bool:
        return bool(ctx.cdir.read_applied())

    def dry_run(self, ctx: Context) -> str:
        return "check that no etcd member is new (those join with `cluster scale`)"

    def run(self, ctx: Context) -> None:
        applied = ctx.cdir.read_applied()
        new = [n.name for n in ctx.spec.etcd_members if n.name not in applied]
        if new:
            raise ScaleError(
                f"nodes[{', '.join(new)}]: new etcd members join a running cluster with `provisioner cluster scale`, "
                "not create; nothing was changed"
            )


def create_phases() -> list[Phase]:
    return [
        VersionGuard(),
        MembershipGuard(),
        Preflight(),
        Inventory(),
        Certificates(),
        Artifacts(),
        Playbook("cluster.yml"),
        AdminKubeconfig(),
        RecordNodes(),
    ]


def scale_phases() -> list[Phase]:
    return [VersionGuard(), Preflight(), Inventory(), Certificates(), Artifacts(), ScalePlaybook(), RecordNodes()]


class EtcdRestore:
    title = "etcd restore"

    def __init__(self, snapshot: Path):
        self.snapshot = snapshot

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"restore every etcd member from {self.snapshot} (old data kept aside)"

    def run(self, ctx: Context) -> None:
        import time

        ctx.extravars["etcd_restore_snapshot"] = str(self.snapshot)
        ctx.extravars["etcd_restore_stamp"] = "restore-" + time.strftime("%Y%m%d-%H%M%S")
        Playbook("etcd-restore.yml").run(ctx)


def restore_phases(snapshot: Path) -> list[Phase]:
    return [Preflight(), Inventory(), EtcdRestore(snapshot)]


class RenewCertificates:
    title = "renew certificates"

    def should_run(self, ctx: Context) -> bool:
        return True

    def dry_run(self, ctx: Context) -> str:
        return f"re-issue the component certificates in {ctx.cdir.pki} (same CAs)"

    def run(self, ctx: Context) -> None:
        svc_ip = inventory.cluster_vars(ctx.spec, ctx.cdir.root)["kube_service_ip"]
        made = pki.ensure(ctx.spec, ctx.cdir.pki, svc_ip, ctx.spec.api_lb.port, renew=True)
        pki.admin_kubeconfig(ctx.spec, ctx.cdir.pki, ctx.cdir.kubeconfig, renew=True)
        ctx.say(f"certificates: re-issued {len(made)} files")


def renew_phases() -> list[Phase]:
    return [Preflight(), Inventory(), RenewCertificates(), Playbook("certs-renew.yml")]


class RemoveNodes:
    title = "playbook remove-node.yml"

    def __init__(self, names: list[str]):
        self.names = names

    def should_run(self, ctx: Context) -> bool:
        return True

    def check(self, ctx: Context) -> None:
        applied = ctx.cdir.read_applied()
        for name in self.names:
            try:
                ctx.spec.node(name)
            except KeyError:
                raise ScaleError(f"{name} is not in the cluster file; nothing to remove") from None
            if applied and name not in applied:
                raise ScaleError(f"{name} is not part of the cluster yet")
        staying = [n for n in ctx.spec.nodes if n.name not in self.names]
        for role, what in (("control-plane", "control plane"), ("etcd", "etcd member")):
            if any(role in n.roles for n in ctx.spec.nodes if n.name in self.names) and not any(
                role in n.roles for n in staying
            ):
                raise ScaleError(
                    f"removing {', '.join(self.names)} would leave no {what}; "
                    "use `cluster reset` to take the whole cluster down"
                )

    def dry_run(self, ctx: Context) -> str:
        self.check(ctx)
        etcd = [n for n in self.names if "etcd" in ctx.spec.node(n).roles]
        return (
            (f"etcd member remove {', '.join(etcd)} (refused if quorum would break); " if etcd else "")
            + f"drain and delete {', '.join(self.names)}, clean them, update the BGP peers"
            + " and API servers of the others"
        )

    def run(self, ctx: Context) -> None:
        self.check(ctx)
        ctx.extravars["removed_nodes"] = self.names
        ctx.extravars["removed_etcd"] = [n for n in self.names if "etcd" in ctx.spec.node(n).roles]
        staying_cps = [n.name for n in ctx.spec.control_planes if n.name not in self.names]
        staying_etcd = [n.name for n in ctx.spec.etcd_members if n.name not in self.names]
        # the node that runs kubectl and etcdctl: a control plane (with etcd) that stays
        ctx.extravars["removed_via"] = next((n for n in staying_cps if n in staying_etcd), staying_cps[0])
        ctx.extravars["removed_etcd_via"] = staying_etcd[0]
        ctx.extravars["removed_control_planes"] = [n for n in self.names if "control-plane" in ctx.spec.node(n).roles]
        Playbook("remove-node.yml").run(ctx)
        applied = ctx.cdir.read_applied()
        ctx.cdir.write_applied({k: v for k, v in applied.items() if k not in self.names})
        blocks = ctx.cdir.read_blocks()
        ctx.cdir.write_blocks({k: v for k, v in blocks.items() if k not in self.names})


def remove_phases(names: list[str]) -> list[Phase]:
    return [Preflight(leave_out=names), Inventory(), RemoveNodes(names)]


def backup_phases() -> list[Phase]:
    return [Preflight(), Inventory(), EtcdBackup("manual")]


def reset_phases(backup: bool = True) -> list[Phase]:
    phases: list[Phase] = [Preflight(), Inventory()]
    if backup:
        phases.append(EtcdBackup("before-reset"))
    return [*phases, Playbook("reset.yml")]


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
