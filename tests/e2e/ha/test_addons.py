"""The add-ons on the HA lab (issue 11): metrics-server behind `kubectl top` and a
HorizontalPodAutoscaler, and local-path-provisioner's default StorageClass.

The cluster file of the shared `ha_cluster` leaves both on (their default). Timings are
printed (run with -s to see them), never asserted: the machine is shared."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.workloads import busybox_image

pytestmark = pytest.mark.e2e

NUMBER = re.compile(r"^\d+m?$|^\d+(Ki|Mi|Gi)$")  # kubectl top: CPU in millicores, memory in Mi


def _top(cluster: Cluster, *args: str) -> list[list[str]]:
    return [line.split() for line in cluster.kubectl("top", *args, "--no-headers").splitlines() if line.strip()]


def test_kubectl_top_shows_every_node_and_the_addon_pods(ha_cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"] for n in ha_cluster.kubectl_json("get", "nodes")["items"]}

    def every_node() -> dict[str, list[str]] | None:
        rows = {r[0]: r[1:] for r in _top(ha_cluster, "nodes")}
        return rows if set(rows) == nodes else None

    rows = ha_cluster.wait("kubectl top nodes to list every node", every_node, timeout=180)
    for name, values in rows.items():
        cpu, _cpu_pct, memory, _mem_pct = values
        assert NUMBER.match(cpu) and NUMBER.match(memory), f"{name}: {values}"

    running = {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in ha_cluster.kubectl_json("get", "pods", "-A", "--field-selector=status.phase=Running")["items"]
        if p["metadata"]["namespace"] in ("kube-system", "local-path-storage")
    }

    def every_pod() -> list[list[str]] | None:
        got = _top(ha_cluster, "pods", "-A")
        return got if running <= {(r[0], r[1]) for r in got} else None

    pods = ha_cluster.wait("kubectl top pods -A to list the add-on pods", every_pod, timeout=180)
    assert any(r[1].startswith("metrics-server-") for r in pods)
    for ns, name, cpu, memory in pods:
        assert NUMBER.match(cpu) and NUMBER.match(memory), f"{ns}/{name}: {cpu} {memory}"


# A web server whose one CGI page burns CPU, an HPA on it (50% of a 50m request), and a load
# generator that asks for that page without pause: the HPA's textbook example, offline.
BURN = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: burn, namespace: default}}
data:
  burn: |
    #!/bin/sh
    echo Content-Type: text/plain
    echo
    i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
    echo burnt
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: [httpd, -f, -p, "8080", -h, /www]
          ports: [{{containerPort: 8080}}]
          resources:
            requests: {{cpu: 50m}}
            limits: {{cpu: 500m}}
          volumeMounts: [{{name: cgi, mountPath: /www/cgi-bin}}]
      volumes: [{{name: cgi, configMap: {{name: burn, defaultMode: 0755}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: burn, namespace: default}}
spec:
  selector: {{app: burn}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: burn, namespace: default}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: burn}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 15
      policies: [{{type: Percent, value: 100, periodSeconds: 15}}]
"""

LOAD = """
apiVersion: v1
kind: Pod
metadata: {{name: load, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: load
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, "while true; do wget -q -O /dev/null http://burn/cgi-bin/burn; done"]
"""


def test_hpa_scales_out_under_load_and_back_in(ha_cluster: Cluster) -> None:
    image = busybox_image()
    ha_cluster.apply(BURN.format(image=image))
    try:
        ha_cluster.kubectl("rollout", "status", "deployment/burn", "--timeout=180s", timeout=200)

        def hpa() -> dict[str, Any]:
            status: dict[str, Any] = ha_cluster.kubectl_json("get", "hpa", "burn").get("status", {})
            return status

        # the HPA reads the pod's CPU through the metrics API before any load
        ha_cluster.wait(
            "the HPA to read the pods' CPU",
            lambda: [m for m in hpa().get("currentMetrics") or [] if m.get("resource", {}).get("current")],
            timeout=180,
        )
        started = time.monotonic()
        ha_cluster.apply(LOAD.format(image=image))
        ha_cluster.wait(
            "the HPA to scale burn out to 2 or more",
            lambda: hpa().get("desiredReplicas", 0) >= 2,
            timeout=300,
            interval=5,
        )
        ha_cluster.wait(
            "2 or more burn replicas available",
            lambda: ha_cluster.kubectl_json("get", "deployment", "burn")["status"].get("availableReplicas", 0) >= 2,
            timeout=180,
        )
        print(f"\nHPA: 1 -> {hpa()['desiredReplicas']} replicas {time.monotonic() - started:.0f}s after the load")

        ha_cluster.kubectl("delete", "pod", "load", "--wait=true", timeout=120)
        stopped = time.monotonic()
        ha_cluster.wait(
            "the HPA to scale burn back in to 1", lambda: hpa().get("desiredReplicas") == 1, timeout=300, interval=5
        )
        ha_cluster.wait(
            "burn back at 1 replica",
            lambda: ha_cluster.kubectl_json("get", "deployment", "burn")["status"].get("replicas") == 1,
            timeout=120,
        )
        print(f"HPA: back to 1 replica {time.monotonic() - stopped:.0f}s after the load stopped")
    finally:
        ha_cluster.kubectl(
            "delete",
            "pod/load",
            "hpa/burn",
            "service/burn",
            "configmap/burn",
            "deployment/burn",
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )


# A PersistentVolumeClaim with no storageClassName: the default class (local-path) serves it.
CLAIM = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: keep, namespace: default}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 64Mi}}}}
"""
WRITER = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, "{script}; exec sleep 3600"]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: keep}}}}]
"""


def test_a_claim_binds_and_its_data_outlives_the_pod(ha_cluster: Cluster) -> None:
    image = busybox_image()
    token = uuid.uuid4().hex
    try:
        started = time.monotonic()
        ha_cluster.apply(CLAIM.format())
        ha_cluster.apply(WRITER.format(name="writer", image=image, script=f"echo {token} > /data/token"))
        ha_cluster.kubectl("wait", "--for=condition=Ready", "pod/writer", "--timeout=180s", timeout=200)
        print(f"\nPVC: created -> its pod Ready in {time.monotonic() - started:.1f}s")
        claim = ha_cluster.kubectl_json("get", "pvc", "keep")
        assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-path", claim
        node = ha_cluster.kubectl_json("get", "pod", "writer")["spec"]["nodeName"]

        ha_cluster.kubectl("delete", "pod", "writer", "--wait=true", timeout=120)
        ha_cluster.apply(WRITER.format(name="reader", image=image, script="cat /data/token"))
        ha_cluster.kubectl("wait", "--for=condition=Ready", "pod/reader", "--timeout=180s", timeout=200)
        reader = ha_cluster.kubectl_json("get", "pod", "reader")
        assert reader["spec"]["nodeName"] == node, "the volume pins its pods to its node"
        assert ha_cluster.kubectl("logs", "reader").strip() == token, "the replacement reads what the first pod wrote"
    finally:
        ha_cluster.kubectl(
            "delete",
            "pod/writer",
            "pod/reader",
            "pvc/keep",
            "--ignore-not-found",
            "--wait=true",
            check=False,
            timeout=180,
        )
    # the claim's volume is released: local-path deletes it (reclaimPolicy Delete)
    ha_cluster.wait(
        "the volume of the deleted claim to be removed",
        lambda: (
            not [
                pv
                for pv in ha_cluster.kubectl_json("get", "pv")["items"]
                if pv["spec"].get("claimRef", {}).get("name") == "keep"
            ]
        ),
        timeout=180,
    )
