"""NetworkPolicy checks shared by the e2e clusters (network.policy: kube-router's policy
controller). One server pod (busybox httpd on 8080, the named port `http`, and on 8081), a
client on the server's node and one on another node, in the server's namespace, and a
visitor in a second namespace; policies are applied and removed in sequence, and each
state is checked by real connections (HTTP over nc) that must be answered or refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.e2e.conftest import Cluster, kubectl_binary
from tests.e2e.workloads import busybox_image

NS = "np"
VISITORS = "np-visitors"

PODS = """
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{team: np}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {visitors}, labels: {{team: visitors}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  nodeName: {server_node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, "mkdir -p /tmp/www && echo web > /tmp/www/index.html
                && httpd -p 8081 -h /tmp/www && exec httpd -f -p 8080 -h /tmp/www"]
      ports: [{{name: http, containerPort: 8080}}, {{containerPort: 8081}}]
{clients}
"""
CLIENT = """
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{role: client}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - {{name: c, image: {image}, imagePullPolicy: Never, command: [sleep, "86400"]}}
"""


@dataclass(frozen=True)
class Client:
    name: str
    namespace: str
    node: str


@dataclass
class Lab:
    """The server's address and the clients: `near` shares the server's node (traffic crosses
    the node's CNI bridge), `far` is on another node (routed), `visitor` is in another namespace."""

    cluster: Cluster
    web_ip: str
    clients: dict[str, Client]

    def reaches(self, client: str, port: int = 8080) -> bool:
        """Whether ``client`` gets web's page on ``port`` (busybox-static's wget crashes in a
        libc-less image: nc speaks the HTTP)."""
        c = self.clients[client]
        kubectl = [str(kubectl_binary()), "--kubeconfig", str(self.cluster.kubeconfig), "-n", c.namespace]
        get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {self.web_ip} {port}"
        proc = subprocess.run(
            [*kubectl, "exec", c.name, "--", "sh", "-c", get], capture_output=True, text=True, timeout=60
        )
        if proc.returncode == 0 and proc.stdout.strip():
            assert proc.stdout.strip().splitlines()[-1] == "web", proc.stdout
            return True
        # refused (kube-router REJECTs) or timed out; anything else is not the network's answer
        assert "refused" in proc.stderr or "timed out" in proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
        return False

    def expect(self, what: str, expected: dict[tuple[str, int], bool], timeout: float = 90) -> None:
        """Wait until every (client, port) connection is answered (True) or refused (False)."""

        def state() -> bool:
            seen = {key: self.reaches(*key) for key in expected}
            assert seen == expected, f"seen {seen}"
            return True

        self.cluster.wait(what, state, timeout=timeout, interval=2)

    @contextmanager
    def policy(self, manifest: str, namespace: str = NS) -> Iterator[None]:
        self.cluster.apply(manifest.replace("NAMESPACE", namespace))
        try:
            yield
        finally:
            self.cluster.kubectl("-n", namespace, "delete", "networkpolicy", "--all", "--wait=true")


def start(cluster: Cluster, server_node: str, other_node: str) -> Lab:
    # what an interrupted run left (pods cannot be made in a namespace being deleted)
    cluster.kubectl("delete", "namespace", NS, VISITORS, "--ignore-not-found", "--wait=true", timeout=300)
    image = busybox_image()
    clients = {
        "near": Client("near", NS, server_node),
        "far": Client("far", NS, other_node),
        "visitor": Client("visitor", VISITORS, other_node),
    }
    docs = "".join(CLIENT.format(name=c.name, ns=c.namespace, node=c.node, image=image) for c in clients.values())
    cluster.apply(PODS.format(ns=NS, visitors=VISITORS, server_node=server_node, image=image, clients=docs))
    for c in [Client("web", NS, server_node), *clients.values()]:
        cluster.kubectl(
            "-n", c.namespace, "wait", "--for=condition=Ready", f"pod/{c.name}", "--timeout=180s", timeout=200
        )
    web = cluster.kubectl_json("-n", NS, "get", "pod", "web")
    return Lab(cluster, web["status"]["podIP"], clients)


def stop(cluster: Cluster) -> None:
    cluster.kubectl("delete", "namespace", NS, VISITORS, "--ignore-not-found", "--wait=false")


def pod_subnet(cluster: Cluster) -> str:
    from provisioner import spec

    return spec.load(cluster.file).network.pod_subnet


def pod_ip(cluster: Cluster, client: Client) -> str:
    return cluster.kubectl_json("-n", client.namespace, "get", "pod", client.name)["status"]["podIP"]


DENY_INGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: NAMESPACE}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
ALLOW_CLIENTS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]
"""
ALLOW_VISITORS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-visitors, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: visitors}}}]}]
"""
ALLOW_NAMED_PORT = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-http, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: http, protocol: TCP}]}]
"""
ALLOW_BLOCK_EXCEPT = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-block, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{ipBlock: {cidr: POD_SUBNET, except: [EXCEPT/32]}}]}]
"""
DENY_EGRESS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: NAMESPACE}
spec: {podSelector: {matchLabels: {role: client}}, policyTypes: [Egress]}
"""
