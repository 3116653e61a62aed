"""Workload checks shared by the e2e topologies: nodes Ready, pods on every node, pod to
pod across nodes, a ClusterIP service, cluster DNS and BGP sessions."""

from __future__ import annotations

import testinfra

from tests.e2e.conftest import Cluster

SPREAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      tolerations: [{{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}]
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: spread}}}}}}
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
          ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: spread, namespace: default}}
spec:
  selector: {{app: spread}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def busybox_image() -> str:
    from provisioner.lab.manager import DEFAULT_MIRROR
    from provisioner.mirror.manifest import Manifest

    manifest = Manifest.read(DEFAULT_MIRROR)
    return manifest.find("image-busybox", manifest.versions("image-busybox")[-1]).image or ""


def check_workloads(cluster: Cluster, nodes: list[str], route_reflectors: list[str] | None = None) -> None:
    # every node Ready
    def ready() -> bool:
        items = cluster.kubectl_json("get", "nodes")["items"]
        status = {
            n["metadata"]["name"]: {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"] for n in items
        }
        return sorted(status) == sorted(nodes) and set(status.values()) == {"True"}

    cluster.wait("all nodes Ready", ready)

    # one pod per node, Running
    cluster.apply(SPREAD.format(replicas=len(nodes), image=busybox_image()))

    def running() -> dict[str, tuple[str, str]] | None:
        pods = cluster.kubectl_json("get", "pods", "-l", "app=spread")["items"]
        ok = {
            p["spec"].get("nodeName"): (p["metadata"]["name"], p["status"].get("podIP", ""))
            for p in pods
            if p["status"].get("phase") == "Running"
        }
        return ok if sorted(ok) == sorted(nodes) else None

    placed = cluster.wait("one Running spread pod per node", running, timeout=240)
    names = sorted(placed)
    first_pod, _ = placed[names[0]]
    other_node = names[1]
    _, other_ip = placed[other_node]

    # a pod pings a pod on another node (routes from BIRD)
    out = cluster.kubectl("exec", first_pod, "--", "ping", "-c", "3", "-W", "2", other_ip)
    assert " 0% packet loss" in out, out

    # a ClusterIP service answers from a pod
    svc_ip = cluster.kubectl_json("get", "service", "spread")["spec"]["clusterIP"]
    # (busybox-static's wget crashes in a libc-less image; nc speaks the HTTP instead)
    get = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {svc_ip} 80 | tail -n 1'
    seen = {cluster.kubectl("exec", first_pod, "--", "sh", "-c", get).strip() for _ in range(6)}
    assert seen and seen <= {p[0] for p in placed.values()}, seen

    # a pod resolves the API service's name through CoreDNS
    domain = "cluster.local"
    out = cluster.kubectl("exec", first_pod, "--", "nslookup", f"kubernetes.default.svc.{domain}")
    kube_svc = cluster.kubectl_json("get", "service", "kubernetes")["spec"]["clusterIP"]
    assert kube_svc in out, out

    # BIRD: every BGP session Established on every node
    for row in cluster.lab.status():
        host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster.lab.key}")
        protocols = host.check_output("birdc show protocols")
        bgp = [line for line in protocols.splitlines() if " BGP " in line]
        rrs = route_reflectors or []
        expected = len(rrs) if rrs and row["node"] not in rrs else len(nodes) - 1
        assert len(bgp) == expected, protocols
        assert all("Established" in line for line in bgp), protocols
