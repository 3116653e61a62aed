"""The canary and the pollers.

The canary: a Deployment of the mirror's busybox image (``imagePullPolicy: Never``: every
node has it) serving a ConfigMap's token over HTTP, behind a ClusterIP Service. It tolerates
the control-plane taint, so that killing the only worker still leaves it nodes to run on,
and keeps Kubernetes' default tolerations (a pod stays bound to a NotReady node for 300 s).

The pollers, each every 0.5 s:
- ``api``: GET /readyz through the admin kubeconfig's endpoint (the VIP when there is one);
- ``canary-api``: the canary Service through the API server's service proxy, from the controller;
- ``canary``: the canary Service from inside the cluster, by a poller pod placed away from
  the target (its log, with the container runtime's timestamps, is read back);
and the observer, every second, through an API server the fault does not hit: Node
conditions, the canary Deployment and its pods.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from provisioner.chaos.blast import CONTROL_PLANE_TAINT
from provisioner.chaos.kube import Proxy
from provisioner.chaos.timeline import Event, Sample, Timeline

TICK = 0.5  # seconds between two probes
PROBE_TIMEOUT = 2.0  # a request not answered within 2 s counts as the service being unavailable
CANARY = "canary"
POLLER = "canary-poller"
_KEY, _EFFECT = CONTROL_PLANE_TAINT.split(":")[0], CONTROL_PLANE_TAINT.split(":")[1]


def _security(pad: int) -> str:
    """Pod Security "baseline" and a bit more (the mirror's busybox image runs only as root with
    its capabilities: its directories are root's alone)."""
    sp = " " * pad
    return f"\n{sp}securityContext: {{seccompProfile: {{type: RuntimeDefault}}}}"


def _container_security(pad: int) -> str:
    sp = " " * pad
    return f"\n{sp}securityContext: {{allowPrivilegeEscalation: false}}"


def canary_manifest(namespace: str, token: str, replicas: int, image: str) -> str:
    """Namespace, ConfigMap (the token), Deployment (serves it) and Service."""
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}, labels: {{app.kubernetes.io/managed-by: provisioner-chaos}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {CANARY}, namespace: {namespace}}}
data: {{index.html: "{token}"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {CANARY}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {CANARY}}}}}
  template:
    metadata: {{labels: {{app: {CANARY}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations: [{{key: {_KEY}, effect: {_EFFECT}}}]
      topologySpreadConstraints:
        - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway,
           labelSelector: {{matchLabels: {{app: {CANARY}}}}}}}{_security(6)}
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: [httpd, -f, -p, "8080", -h, /www]
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1, failureThreshold: 1}}
          volumeMounts: [{{name: www, mountPath: /www}}]{_container_security(10)}
      volumes: [{{name: www, configMap: {{name: {CANARY}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {CANARY}, namespace: {namespace}}}
spec:
  selector: {{app: {CANARY}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


# One line "s N" when probe N starts, "r N ok|fail" when it ends: the start is the sample's time
# (the runtime's log timestamp), the probes run in the background so that a slow one does not
# hold the next. busybox's nc speaks the HTTP (its wget crashes in a libc-less image).
POLLER_SCRIPT = (
    'i=0; while :; do i=$((i+1)); echo "s $i"; '
    "( if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 1 $CANARY_IP 80 | grep -q \"$CANARY_TOKEN\"; "
    'then echo "r $i ok"; else echo "r $i fail"; fi ) & '
    f"sleep {TICK}; done"
)


def poller_manifest(namespace: str, service_ip: str, token: str, avoid: list[str], image: str) -> str:
    avoid_list = ", ".join(avoid) or "none"
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {POLLER}, namespace: {namespace}, labels: {{app: {POLLER}}}}}
spec:
  terminationGracePeriodSeconds: 0
  tolerations: [{{key: {_KEY}, effect: {_EFFECT}}}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions: [{{key: kubernetes.io/hostname, operator: NotIn, values: [{avoid_list}]}}]{_security(2)}
  containers:
    - name: poll
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, {_yaml_str(POLLER_SCRIPT)}]
      env:
        - {{name: CANARY_IP, value: "{service_ip}"}}
        - {{name: CANARY_TOKEN, value: "{token}"}}{_container_security(6)}
"""


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parse_poller_log(text: str, now: float, timeout: float = 3.0) -> list[Sample]:
    """Samples from the poller's log (with ``timestamps=true``): each probe at its start; a probe
    that never reported and started more than ``timeout`` before ``now`` failed."""
    starts: dict[str, float] = {}
    results: dict[str, bool] = {}
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        parts = rest.split()
        if len(parts) < 2:
            continue
        try:
            t = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if parts[0] == "s":
            starts[parts[1]] = t
        elif parts[0] == "r" and len(parts) == 3:
            results[parts[1]] = parts[2] == "ok"
    out = []
    for n, t in starts.items():
        if n in results:
            out.append(Sample(t, results[n]))
        elif now - t > timeout:
            out.append(Sample(t, False, "no answer"))
    return sorted(out)


def node_ready(node: dict[str, Any]) -> bool:
    for c in node.get("status", {}).get("conditions", []) or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def live_pods(pods: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The pods of a pod list that are not being deleted."""
    return [p for p in (pods or {}).get("items", []) if not p.get("metadata", {}).get("deletionTimestamp")]


def canary_state(deploy: dict[str, Any] | None, pods: dict[str, Any] | None) -> tuple[int, int, dict[str, int]]:
    """(ready pods, wanted replicas, node -> canary pods) from the Deployment and its pods."""
    wanted = int((deploy or {}).get("spec", {}).get("replicas", 0) or 0)
    ready = 0
    where: dict[str, int] = {}
    for p in live_pods(pods):
        node = p.get("spec", {}).get("nodeName") or ""
        where[node] = where.get(node, 0) + 1
        conds = {c.get("type"): c.get("status") for c in p.get("status", {}).get("conditions", []) or []}
        ready += conds.get("Ready") == "True"
    return ready, wanted, where


def live_pod_names(pods: dict[str, Any]) -> set[str]:
    """The names of the pods in a list that are not being deleted."""
    return {name for p in live_pods(pods) if (name := p.get("metadata", {}).get("name"))}


class Pollers:
    """The probe and observer threads, writing into one Timeline (under a lock)."""

    def __init__(self, api: Proxy, observer: Proxy, namespace: str, token: str, timeline: Timeline):
        self.api = api
        self.observer = observer
        self.namespace = namespace
        self.token = token
        self.timeline = timeline
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.nodes: dict[str, bool] = {}  # last seen Ready
        self.canary: tuple[int, int] = (0, 0)
        self.canary_pods: set[str] | None = None  # names of the live canary pods at the last look
        self.poller_log = ""

    # -- probes ------------------------------------------------------------------------------
    def _record(self, name: str, sample: Sample) -> None:
        with self.lock:
            self.timeline.add(name, sample)

    def _probe_api(self, t: float) -> None:
        status, _ = self.api.get("/readyz", PROBE_TIMEOUT)
        self._record("api", Sample(t, status == 200, "" if status == 200 else f"HTTP {status or 'timeout'}"))

    def _probe_canary_api(self, t: float) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/services/http:{CANARY}:80/proxy/"
        status, body = self.api.get(path, PROBE_TIMEOUT)
        ok = status == 200 and self.token.encode() in body
        self._record("canary-api", Sample(t, ok, "" if ok else f"HTTP {status or 'timeout'}"))

    def _ticker(self, probe: Callable[[float], None]) -> None:
        next_t = time.time()
        while not self.stop_event.is_set():
            threading.Thread(target=probe, args=(next_t,), daemon=True).start()
            next_t += TICK
            self.stop_event.wait(max(0.0, next_t - time.time()))

    # -- observer ------------------------------------------------------------------------------
    def observe_once(self) -> None:
        t = time.time()
        nodes = self.observer.json("/api/v1/nodes")
        deploy = self.observer.json(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{CANARY}")
        pods = self.observer.json(f"/api/v1/namespaces/{self.namespace}/pods?labelSelector=app%3D{CANARY}")
        with self.lock:
            if nodes is not None:
                readiness = [node_ready(n) for n in nodes.get("items", [])]
                detail = f"{sum(readiness)}/{len(readiness)}"
                self.timeline.add("nodes-ready", Sample(t, all(readiness), detail))
                for n in nodes.get("items", []):
                    name, ready = n["metadata"]["name"], node_ready(n)
                    before = self.nodes.get(name)
                    if before is not None and before != ready:
                        self.timeline.event(Event(t, "node-ready" if ready else "node-not-ready", name))
                    self.nodes[name] = ready
            if deploy is not None and pods is not None:
                ready, wanted, _ = canary_state(deploy, pods)
                full = ready >= wanted > 0
                if self.canary != (0, 0) and (self.canary[0] >= self.canary[1]) != full:
                    kind = "canary-ready" if full else "canary-not-ready"
                    self.timeline.event(Event(t, kind, "", f"{ready}/{wanted}"))
                self.canary = (ready, wanted)
                live = live_pod_names(pods)
                if self.canary_pods is not None:
                    for name in sorted(live - self.canary_pods):  # its ReplicaSet made a new one
                        self.timeline.event(Event(t, "canary-pod-created", "", name))
                self.canary_pods = live
                self.timeline.add("canary-ready", Sample(t, full, f"{ready}/{wanted}"))
            else:
                self.timeline.add("canary-ready", Sample(t, False, "API unreachable"))

    def read_poller_log(self, final: bool = False) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{POLLER}/log?timestamps=true"
        status, body = self.observer.get(path, 10.0 if final else 2.0)
        if status == 200:
            text = body.decode(errors="replace")
            with self.lock:
                self.poller_log = text
                self.timeline.series["canary"] = parse_poller_log(text, time.time())

    def _observer(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            self.observe_once()
            if n % 2 == 0:
                self.read_poller_log()
            n += 1
            self.stop_event.wait(1.0)

    def start(self) -> None:
        for target in (lambda: self._ticker(self._probe_api), lambda: self._ticker(self._probe_canary_api)):
            self.threads.append(threading.Thread(target=target, daemon=True))
        self.threads.append(threading.Thread(target=self._observer, daemon=True))
        for th in self.threads:
            th.start()

    def stop(self) -> None:
        self.stop_event.set()
        for th in self.threads:
            th.join(timeout=5)
        time.sleep(PROBE_TIMEOUT)  # the probes under way report
        self.read_poller_log(final=True)
