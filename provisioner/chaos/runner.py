"""One chaos experiment, in order:

1. the blast-radius guard on the cluster file alone (the CLI, before any connection);
2. preflight and chaos-facts.yml (read-only): faults still active, etcd health and leader;
   the Nodes through the API; the guard again on what is really up, which picks the target;
3. the canary (Deployment, Service, ConfigMap; the canary key in etcd) and the steady state:
   every Node Ready, every etcd member healthy, the canary whole and answering, and
   `cluster validate` passing; otherwise refused;
4. the pollers start; the fault is injected (chaos-inject.yml, its undo timer armed on the
   node first) or the canary pod deleted; it lasts ``duration`` seconds;
5. the undo (chaos-undo.yml), which also runs on Ctrl-C, SIGTERM or any error once the
   fault is in; then the wait for recovery (the steady state for ``settle`` seconds);
6. chaos-facts.yml again (etcd's log of leader changes, the canary key, the fault gone),
   `cluster validate`, the measurements, the verdict, the report.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from provisioner import apply, defaults, validate
from provisioner.artifacts import fetch_manifest
from provisioner.chaos import blast, experiments, hypothesis, kube, nodes, probe, report, timeline
from provisioner.chaos.experiments import Experiment, Signal, Target
from provisioner.chaos.timeline import Event, Sample, Timeline
from provisioner.errors import ProvisionerError
from provisioner.runner import PlaybookFailed, RunResult, run_playbook
from provisioner.spec import ClusterSpec
from provisioner.state import ClusterDir

CANARY_READY_TIMEOUT = 180.0
BASELINE_S = 3.0  # probes before the injection


class ChaosError(ProvisionerError):
    pass


class Interrupted(ChaosError):
    pass


@dataclass
class Options:
    experiment: str
    target: str = blast.AUTO
    duration: int | None = None
    report_dir: Path | None = None
    validate: bool = True
    live: bool = True
    confirm: Callable[[str], None] = lambda question: None


def default_duration(spec: ClusterSpec, e: Experiment) -> int:
    """kill-pod: instant. A leader change: 20 s. A Node that must go NotReady: its detection limit
    (node_monitor_grace_period, plus the controller manager's failover for a control plane) and 5 s."""
    if e.target is Target.POD:
        return 0
    if e.signal is Signal.LEADER_CHANGE:
        return 20
    detection = defaults.chaos_limits(spec, e.name).get("detection_s")
    if detection is None:  # the cluster file turned the limit off
        detection = spec.kubernetes.node_monitor_grace_period + defaults.NODE_MONITOR_PERIOD_S + 10
    return int(detection) + 5


@dataclass
class Run:
    spec: ClusterSpec
    cdir: ClusterDir
    opts: Options
    console: Console
    e: Experiment = field(init=False)
    run_id: str = field(init=False)
    timeline: Timeline = field(default_factory=Timeline)
    phase: str = "starting"
    target: str = ""
    started: float = field(default_factory=time.time)
    injected: float | None = None
    fault_end: float | None = None
    undone_by: str | None = None
    pollers: probe.Pollers | None = None

    def __post_init__(self) -> None:
        self.e = experiments.get(self.opts.experiment)
        self.duration = self.opts.duration if self.opts.duration is not None else default_duration(self.spec, self.e)
        self.run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.ctx = apply.Context(self.spec, self.cdir, command="chaos", quiet=True, say=self.say)

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    # -- plays -----------------------------------------------------------------------------
    def play(
        self,
        name: str,
        extravars: dict[str, Any],
        on_ok: Callable[[str, float], None] | None = None,
        retries: int = 0,
    ) -> RunResult:
        """Run one of the chaos playbooks. ``retries``: for the plays that may run again (the
        read-only facts, the idempotent undo), how often a play whose only failures are
        unreachable hosts is tried again (an SSH connection timed out on a busy controller)."""
        for attempt in range(retries + 1):
            result = self._play(name, extravars, on_ok)
            unreachable = bool(result.failures) and all(f.unreachable for f in result.failures)
            if not unreachable or attempt == retries:
                break
            self.say(f"{name}: {', '.join(f.host for f in result.failures)} did not answer; trying again")
            time.sleep(3)
        if not result.ok:
            raise PlaybookFailed(result)
        return result

    def _play(self, name: str, extravars: dict[str, Any], on_ok: Callable[[str, float], None] | None) -> RunResult:
        def handler(event: dict[str, Any]) -> None:
            if on_ok and event.get("event") == "runner_on_ok":
                on_ok(str(event.get("event_data", {}).get("task", "")), time.time())

        with own_signals():
            result = run_playbook(
                name,
                self.cdir.inventory,
                self.cdir.runner,
                log_path=self.ctx.log,
                extravars=extravars,
                on_event=handler,
                config=self.cdir.ansible_cfg,
                collect=nodes.FACTS_TASK,
            )
        if result.status == "canceled":  # Ctrl-C or SIGTERM during the play: ansible-runner stopped it
            raise KeyboardInterrupt
        return result

    def facts(self, journal_since: float = 0) -> nodes.ChaosFacts:
        result = self.play("chaos-facts.yml", {"chaos_journal_since": int(journal_since)}, retries=2)
        return nodes.from_results([n.name for n in self.spec.nodes], result.collected)

    # -- topology ---------------------------------------------------------------------------
    def topology(self, facts: nodes.ChaosFacts, api: kube.Proxy) -> blast.Topology:
        k8s = api.json("/api/v1/nodes", timeout=10)
        if k8s is None:
            raise blast.SteadyStateRefused("the API does not answer through the admin kubeconfig")
        pods = api.json(f"/api/v1/namespaces/{self.spec.chaos.namespace}/pods?labelSelector=app%3D{probe.CANARY}")
        _, _, where = probe.canary_state(None, pods)
        by_name = {n["metadata"]["name"]: n for n in k8s.get("items", [])}
        states = {}
        for n in self.spec.nodes:
            obj = by_name.get(n.name)
            spec = (obj or {}).get("spec", {})
            taints = tuple(f"{t['key']}:{t['effect']}" for t in spec.get("taints", []) or [])
            states[n.name] = blast.NodeState(
                n.name,
                tuple(n.roles),
                probe.node_ready(obj) if obj else None,
                bool(spec.get("unschedulable")),
                taints,
                where.get(n.name, 0),
            )
        return blast.Topology(states, facts.etcd_healthy, facts.leader, facts.active)

    # -- the run -----------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        e, spec = self.e, self.spec
        duration = self.duration
        self.phase = "preflight"
        apply.Preflight().run(self.ctx)
        validate.write_inventory(spec, self.cdir)
        self.phase = "facts"
        before = self.facts()
        kubectl = kube.Kubectl(kube.kubectl_binary(spec, self.cdir), self.cdir.kubeconfig)
        current, servers = kube.contexts(self.cdir.kubeconfig)
        with kubectl.proxy() as api:
            topo = self.topology(before, api)
            if e.target is Target.POD:  # its target is a canary pod: chosen once the canary runs
                blast.no_fault_active(topo)
            else:
                self.target = blast.choose(e, self.opts.target, topo)
            self.opts.confirm(self.question(duration))
            self.phase = "canary"
            image = busybox_image(spec)
            token = self.ensure_canary(kubectl, api, topo, image)
            topo = self.topology(before, api)
            self.target = blast.choose(e, self.opts.target, topo)
            observer_ctx = self.observer_context(current, servers)
            with kubectl.proxy(observer_ctx) if observer_ctx != current else nullcontext(api) as obs:
                self.start_poller(kubectl, api, image, token)
                self.pollers = probe.Pollers(api, obs, spec.chaos.namespace, token, self.timeline)
                self.steady_state(topo)
                key_value = f"{self.run_id}-{secrets.token_hex(4)}"
                return self.experiment(kubectl, api, before, topo, duration, token, key_value)

    def question(self, duration: int) -> str:
        where = f" on {self.target}" if self.target else ""
        lasting = f" for {duration} s" if self.e.node_side else ""
        return f"Inject {self.e.name}{where} into {self.spec.name}{lasting}?"

    def observer_context(self, current: str, servers: dict[str, str]) -> str:
        """A context whose API server the fault does not hit (the current one when it is a VIP
        or another node)."""
        if not self.e.node_side:
            return current
        hit = self.spec.node(self.target).address
        if kube.host_of(servers.get(current, "")) != hit:
            return current
        return next((c for c, url in servers.items() if kube.host_of(url) != hit), current)

    def ensure_canary(self, kubectl: kube.Kubectl, api: kube.Proxy, topo: blast.Topology, image: str) -> str:
        ns = self.spec.chaos.namespace
        existing = api.json(f"/api/v1/namespaces/{ns}/configmaps/{probe.CANARY}")
        token = (existing or {}).get("data", {}).get("index.html") or f"canary-{secrets.token_hex(8)}"
        homes = sum(1 for n in topo.nodes.values() if n.canary_may_run)
        replicas = self.spec.chaos.canary_replicas or max(2, homes)
        kubectl.apply(probe.canary_manifest(ns, token, replicas, image))
        deadline = time.monotonic() + CANARY_READY_TIMEOUT
        state: tuple[int, int, dict[str, int]] = (0, replicas, {})
        while time.monotonic() < deadline:
            deploy = api.json(f"/apis/apps/v1/namespaces/{ns}/deployments/{probe.CANARY}")
            pods = api.json(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{probe.CANARY}")
            state = probe.canary_state(deploy, pods)
            if state[0] == state[1] == sum(state[2].values()) == replicas:
                return token
            time.sleep(1)
        raise blast.SteadyStateRefused(
            f"the canary is not Ready: {state[0]} of {replicas} pods Ready after {CANARY_READY_TIMEOUT:.0f} s"
        )

    def start_poller(self, kubectl: kube.Kubectl, api: kube.Proxy, image: str, token: str) -> None:
        ns = self.spec.chaos.namespace
        api.delete(f"/api/v1/namespaces/{ns}/pods/{probe.POLLER}", {"gracePeriodSeconds": 0})
        deadline = time.monotonic() + 60
        while api.get(f"/api/v1/namespaces/{ns}/pods/{probe.POLLER}", 2)[0] == 200:
            if time.monotonic() > deadline:
                raise ChaosError(f"the old {probe.POLLER} pod in {ns} does not go away")
            time.sleep(0.5)
        svc = api.json(f"/api/v1/namespaces/{ns}/services/{probe.CANARY}") or {}
        ip = svc.get("spec", {}).get("clusterIP", "")
        avoid = [self.target] if self.e.node_side else []
        kubectl.apply(probe.poller_manifest(ns, ip, token, avoid, image))

    def steady_state(self, topo: blast.Topology) -> None:
        """Every Node Ready, every member healthy (in ``topo``), the canary answering from
        inside the cluster and through the API, and `cluster validate` passing."""
        assert self.pollers is not None
        self.phase = "steady state"
        self.pollers.start()
        problems: list[str] = []
        deadline = time.monotonic() + 60
        while True:
            self.pollers.read_poller_log()
            canary = self.timeline.series.get("canary", [])[-4:]
            api = self.timeline.series.get("api", [])[-4:]
            if len(canary) == 4 and all(s.ok for s in canary) and len(api) == 4 and all(s.ok for s in api):
                break
            if time.monotonic() > deadline:
                problems.append("the canary Service does not answer from inside the cluster (poller pod)")
                break
            time.sleep(1)
        if self.opts.validate:
            self.phase = "steady state: cluster validate"
            failed = [r for r in validate.run(self.spec, self.cdir.root) if not r.ok]
            if failed:
                problems.append(
                    "cluster validate fails on " + ", ".join(f"{r.name} ({', '.join(r.failed)})" for r in failed)
                )
        try:
            blast.steady_state(topo, problems)
        except blast.Refused:
            self.pollers.stop()
            raise

    def experiment(
        self,
        kubectl: kube.Kubectl,
        api: kube.Proxy,
        before: nodes.ChaosFacts,
        topo: blast.Topology,
        duration: int,
        token: str,
        key_value: str,
    ) -> dict[str, Any]:
        assert self.pollers is not None
        e, spec = self.e, self.spec
        key_host = next(
            (n.name for n in spec.etcd_members if n.name != self.target and topo.etcd_healthy.get(n.name)),
            spec.etcd_members[0].name,
        )
        if not e.node_side:  # the canary key now; for node faults chaos-inject.yml writes it first
            self.play("chaos-inject.yml", {"chaos_key_host": key_host, "chaos_canary_value": key_value})
        live = Live(
            report.LiveView(f"{e.name} on {self.target}", self.timeline, self.live_state),
            console=self.console,
            refresh_per_second=2,
            transient=False,
        )
        leader_before = before.leader
        settle = spec.chaos.settle_s
        limits = defaults.chaos_limits(spec, e.name)
        with live if self.opts.live else nullcontext(), interruptible():
            try:
                time.sleep(BASELINE_S)
                self.phase = "injecting"
                self.inject(kubectl, api, key_host, key_value, duration)
                self.phase = f"fault ({duration} s)" if e.node_side else "recovering"
                assert self.injected is not None
                while e.node_side and time.time() < self.injected + duration:
                    time.sleep(0.2)
            finally:
                if self.injected is not None or e.node_side:
                    self.phase = "undoing"
                    self.undo()
            self.phase = "recovering"
            timeout = max(limits.get("recovery_s") or 60, 60) + settle + 30
            assert self.fault_end is not None
            while time.time() < self.fault_end + timeout:
                nodes_ok = all(self.pollers.nodes.values())
                if nodes_ok and timeline.recovered_at(self.health(), self.fault_end, settle) is not None:
                    break
                time.sleep(0.5)
            self.phase = "done"
            self.pollers.stop()
        self.phase = "facts"
        after = self.facts(journal_since=(self.injected or self.started) - 5)
        for ev in after.events():
            self.timeline.event(ev)
        cm = api.json(f"/api/v1/namespaces/{spec.chaos.namespace}/configmaps/{probe.CANARY}") or {}
        data_intact = after.canary_key == key_value and cm.get("data", {}).get("index.html") == token
        undone = self.verify_undone(after)
        validate_ok = True
        if self.opts.validate:
            self.phase = "steady state: cluster validate"
            validate_ok = all(r.ok for r in validate.run(spec, self.cdir.root))
        steady_after = (
            undone == [] and validate_ok and all(after.etcd_healthy.values()) and all(self.pollers.nodes.values())
        )
        return self.result(limits, leader_before, after, data_intact, undone, validate_ok, steady_after, duration)

    def inject(self, kubectl: kube.Kubectl, api: kube.Proxy, key_host: str, key_value: str, duration: int) -> None:
        e, ns = self.e, self.spec.chaos.namespace
        if not e.node_side:
            pods = api.json(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{probe.CANARY}") or {}
            victim = next(
                (
                    p["metadata"]["name"]
                    for p in pods.get("items", [])
                    if p.get("spec", {}).get("nodeName") == self.target
                ),
                None,
            )
            if victim is None:
                raise ChaosError(f"no canary pod on {self.target} any more")
            self.injected = time.time()
            status = api.delete(f"/api/v1/namespaces/{ns}/pods/{victim}", {"gracePeriodSeconds": 0})
            if status not in (200, 202):
                raise ChaosError(f"deleting pod {victim} failed (HTTP {status})")
            self.fault_end = self.injected
            self.timeline.event(Event(self.injected, "inject", self.target, f"pod {victim} deleted"))
            return
        node = self.spec.node(self.target)
        fault = e.fault(list(node.roles), duration, self.run_id)
        fault["peers"] = self.peers() if e.partition else []

        def on_ok(task: str, t: float) -> None:
            if task.endswith("arm the node's own undo timer") and self.injected is None:
                self.injected = t
                self.timeline.event(Event(t, "inject", self.target, e.name))

        self.play(
            "chaos-inject.yml",
            {
                "chaos_key_host": key_host,
                "chaos_canary_value": key_value,
                "chaos_target": self.target,
                "chaos_fault": fault,
            },
            on_ok,
        )
        if self.injected is None:
            raise ChaosError(f"chaos-inject.yml did not arm the undo timer on {self.target}")

    def peers(self) -> list[str]:
        """What partition-node cuts the target off from: the other nodes' addresses and pod
        blocks, and the API VIP."""
        blocks = self.cdir.read_blocks()
        out = []
        for n in self.spec.nodes:
            if n.name != self.target:
                out.append(f"{n.address}/32")
                if n.name in blocks:
                    out.append(blocks[n.name])
        if self.spec.api_vip is not None:
            out.append(f"{self.spec.api_vip.address}/32")
        return out

    def undo(self) -> None:
        """chaos-undo.yml on the target (what its marker names; nothing when its own timer came first)."""
        if not self.e.node_side:
            return
        marks: dict[str, float] = {}

        def on_ok(task: str, t: float) -> None:
            marks.setdefault(task.rsplit("| ", 1)[-1], t)

        started = time.time()
        self.play("chaos-undo.yml", {"chaos_target": self.target}, on_ok, retries=3)
        if "the fault to undo" in marks:  # the fault ends when the last of its parts is undone
            self.undone_by = "controller"
            parts = [marks[t] for t in ("start the stopped units again", "remove the partition (chain)") if t in marks]
            self.fault_end = max(parts, default=marks.get("disarm the node's undo timer", marks["the fault to undo"]))
        else:  # the node's timer came first: it fired duration + margin after it was armed
            self.undone_by = "node timer"
            self.fault_end = (self.injected or started) + self.duration + defaults.CHAOS_TIMER_MARGIN_S
        self.timeline.event(Event(self.fault_end, "fault-end", self.target, f"undone by the {self.undone_by}"))

    def verify_undone(self, after: nodes.ChaosFacts) -> list[str]:
        """What of the fault is left on the target (empty: all undone)."""
        if not self.e.node_side:
            return []
        f = after.nodes[self.target]
        left = []
        if f.marker is not None:
            left.append("its marker")
        if f.partition:
            left.append("the partition rules")
        if f.timer == "active":
            left.append("the undo timer")
        roles = list(self.spec.node(self.target).roles)
        down = [u for u in self.e.units_for(roles) if f.units.get(u) != "active"]
        if down:
            left.append(f"units not running: {', '.join(down)}")
        return left

    def health(self) -> list[list[Sample]]:
        """The series that make the canary whole: all its pods Ready, and answering in the cluster."""
        with self.pollers.lock if self.pollers else nullcontext():
            return [list(self.timeline.series.get(name, [])) for name in ("canary-ready", "canary")]

    def live_state(self) -> dict[str, Any]:
        p = self.pollers
        return {
            "phase": self.phase,
            "started": self.started,
            "injected": self.injected,
            "nodes": dict(p.nodes) if p else {},
            "canary": p.canary if p else (0, 0),
        }

    # -- results -----------------------------------------------------------------------------
    def result(
        self,
        limits: dict[str, float | None],
        leader_before: str | None,
        after: nodes.ChaosFacts,
        data_intact: bool,
        undone: list[str],
        validate_ok: bool,
        steady_after: bool,
        duration: int,
    ) -> dict[str, Any]:
        e, tl = self.e, self.timeline
        assert self.injected is not None and self.fault_end is not None
        t0, t_end = self.injected, self.fault_end
        recovered = timeline.recovered_at(self.health(), t_end, self.spec.chaos.settle_s)
        last = max((s.t for series in tl.series.values() for s in series), default=t_end)
        stop = max(t_end, recovered or last)
        subject = self.target if e.signal is Signal.NODE_NOT_READY else None
        detection = timeline.detection(tl.events, e.signal.value, t0, subject)
        hit_leader = leader_before == self.target and (e.etcd or e.partition)
        m = hypothesis.Measurements(
            detection_s=detection,
            recovery_s=None if recovered is None else recovered - t_end,
            api_availability_pct=timeline.availability(tl.series.get("api", []), t0, stop),
            api_longest_gap_s=timeline.longest_gap(tl.series.get("api", []), t0, stop),
            canary_availability_pct=timeline.availability(tl.series.get("canary", []), t0, stop),
            canary_longest_gap_s=timeline.longest_gap(tl.series.get("canary", []), t0, stop),
            leader_election_s=timeline.election(tl.events, t0) if hit_leader else None,
            data_intact=data_intact,
            steady_after=steady_after,
        )
        if not hit_leader:
            m.not_applicable.add("leader_election_s")
        checks = hypothesis.evaluate(limits, m)
        ok = hypothesis.verdict(checks)
        detected_at = None if detection is None else t0 + detection
        marks = {
            "inject": t0,
            "fault-end": t_end if e.node_side else None,
            "detected": detected_at,
            "recovered": recovered,
        }
        return {
            "cluster": self.spec.name,
            "run": self.run_id,
            "experiment": e.name,
            "summary": e.summary,
            "target": self.target,
            "duration_s": duration if e.node_side else 0,
            "injected_at": datetime.fromtimestamp(t0, UTC).isoformat(),
            "undone_by": self.undone_by,
            "left_behind": undone,
            "fault_real": detection is not None,
            "leader_before": leader_before,
            "leader_after": after.leader,
            "validate_after": validate_ok if self.opts.validate else None,
            "settings": {
                "node_monitor_grace_period_s": self.spec.kubernetes.node_monitor_grace_period,
                "default_toleration_s": defaults.DEFAULT_TOLERATION_S,
                "etcd_election_timeout_ms": self.spec.etcd.election_timeout_ms,
                "settle_s": self.spec.chaos.settle_s,
            },
            "limits": limits,
            "measurements": m.as_dict(),
            "checks": [vars(c) for c in checks],
            "hypothesis_holds": ok,
            "canary_api_availability_pct": timeline.availability(tl.series.get("canary-api", []), t0, stop),
            "marks": {k: (None if v is None else round(v - t0, 3)) for k, v in marks.items()},
            "timeline": tl.as_dict(t0),
            "_checks": checks,
            "_marks": marks,
            "_window": (t0, stop),
        }


def busybox_image(spec: ClusterSpec) -> str:
    """The mirror's test image (every node has it: imagePullPolicy Never)."""
    manifest = fetch_manifest(spec.artifacts.files_repo)
    versions = manifest.versions("image-busybox")
    if not versions:
        raise ChaosError("the mirror has no image-busybox (the canary's image); run `provisioner mirror build`")
    return manifest.find("image-busybox", versions[-1]).image or ""


@contextmanager
def own_signals() -> Iterator[None]:
    """ansible-runner replaces the SIGINT and SIGTERM handlers for good with one that only cancels
    the play under way; put ours back after each play, so that Ctrl-C during the fault undoes it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM as Ctrl-C (KeyboardInterrupt), so that the undo in ``finally`` runs for both."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def save_report(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"chaos-{result['cluster']}-{result['experiment']}-{result['run']}"
    data = {k: v for k, v in result.items() if not k.startswith("_")}
    js = report.write_json(directory / f"{stem}.json", data)
    title = f"{result['cluster']}: {result['experiment']} on {result['target']} ({result['run']})"
    origin = result["_marks"]["inject"]
    png = report.write_png(
        directory / f"{stem}.png", title, _timeline_of(result), origin, result["_marks"], result["_window"]
    )
    return js, png


def _timeline_of(result: dict[str, Any]) -> Timeline:
    tl = Timeline()
    origin = result["_marks"]["inject"]
    for name, samples in result["timeline"]["series"].items():
        for row in samples:
            tl.add(name, Sample(origin + row[0], bool(row[1]), row[2] if len(row) > 2 else ""))
    return tl


def run(spec: ClusterSpec, cdir: ClusterDir, opts: Options, console: Console) -> dict[str, Any]:
    """The experiment (after ``blast.static``); the result, with the report written."""
    r = Run(spec, cdir, opts, console)
    result = r.execute()
    if opts.report_dir is not None:
        js, png = save_report(result, opts.report_dir)
        result["report"] = {"json": str(js), "png": str(png)}
    result["log"] = str(r.ctx.log)
    return result


def undo_all(spec: ClusterSpec, cdir: ClusterDir, console: Console) -> dict[str, Any]:
    """`cluster chaos --undo`: undo whatever fault any node's marker names."""
    ctx = apply.Context(spec, cdir, command="chaos-undo", quiet=True, say=lambda m: console.print(m))
    apply.Preflight().run(ctx)
    validate.write_inventory(spec, cdir)
    result = run_playbook(
        "chaos-undo.yml", cdir.inventory, cdir.runner, log_path=ctx.log, config=cdir.ansible_cfg, extravars={}
    )
    if not result.ok:
        raise PlaybookFailed(result)
    return {"undone": sorted(h for h, s in result.stats.items() if s.changed), "log": str(ctx.log)}
