"""Benchmark: pod-to-pod throughput, encapsulated (VXLAN) against direct, on a created
two-subnet lab cluster with encapsulation vxlan, cross-subnet (`lab up --subnets 2`: cp1 and w2
on the first subnet, w1 on the second).

One tool for every figure: busybox httpd on w2 serves a 256 MiB file, and a client pod fetches
it with busybox nc (the time read from /proc/uptime inside the client, the median of 3 runs):

- within a node: a client on w2 (the CNI bridge; no tunnel in any mode);
- across nodes, direct: a client on cp1 (same subnet: BIRD's route, no encapsulation);
- across nodes, encapsulated: the same client on cp1 with cp1's BGP session to w2 disabled for
  the run, so that both ends route the other's block through pod-vxlan (same nodes, same path);
- across subnets: a client on w1 (through the host's routing and pod-vxlan).

Prints the figures and the ratios encapsulated / direct; --record appends them to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._record import record
from provisioner.lab.manager import DEFAULT_MIRROR, Lab
from provisioner.mirror.manifest import Manifest
from provisioner.versions import DEFAULT_KUBERNETES

NS = "bench-encap"
MIB = 256
PODS = """
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}}}
spec:
  nodeName: w2
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: {image}
      imagePullPolicy: Never
      command: [sh, -c, "mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1048576 count={mib} 2>/dev/null
                && exec httpd -f -p 8080 -h /tmp/www"]
{clients}
"""
CLIENT = """
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  tolerations: [{{operator: Exists}}]
  containers: [{{name: c, image: {image}, imagePullPolicy: Never, command: [sleep, "86400"]}}]
"""
CLIENTS = {"on-w2": "w2", "on-cp1": "cp1", "on-w1": "w1"}


class Bench:
    def __init__(self, lab: Lab) -> None:
        manifest = Manifest.read(DEFAULT_MIRROR)
        self.kubectl_bin = str(DEFAULT_MIRROR / manifest.find("kubectl", DEFAULT_KUBERNETES).path)
        self.image = manifest.find("image-busybox", manifest.versions("image-busybox")[-1]).image or ""
        self.lab = lab
        self.addresses = {r["node"]: r["address"] for r in lab.status()}

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.lab.cluster.kubeconfig), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            sys.exit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def ssh(self, node: str, command: str) -> str:
        cmd = ["ssh", "-i", str(self.lab.key), "-o", f"UserKnownHostsFile={self.lab.known_hosts}"]
        proc = subprocess.run([*cmd, f"root@{self.addresses[node]}", command], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{node}: {command}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> str:
        self.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true")
        clients = "".join(CLIENT.format(name=n, node=node, ns=NS, image=self.image) for n, node in CLIENTS.items())
        self.kubectl("apply", "-f", "-", stdin=PODS.format(ns=NS, image=self.image, mib=MIB, clients=clients))
        for pod in ("web", *CLIENTS):
            self.kubectl("-n", NS, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=180s")
        time.sleep(3)  # the file is written before httpd starts; give it its first second
        return self.kubectl("-n", NS, "get", "pod", "web", "-o", "jsonpath={.status.podIP}")

    def fetch_mib_s(self, client: str, web: str) -> float:
        script = (
            "a=$(cut -d' ' -f1 /proc/uptime); "
            f"n=$(printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {web} 8080 | wc -c); "
            'b=$(cut -d" " -f1 /proc/uptime); echo $n $a $b'
        )
        runs = []
        for _ in range(3):
            n, a, b = self.kubectl("-n", NS, "exec", client, "--", "sh", "-c", script).split()
            assert int(n) > MIB * 1024 * 1024, f"{client} got {n} bytes"
            runs.append(int(n) / 1024 / 1024 / max(float(b) - float(a), 0.01))
        return statistics.median(runs)

    def route(self, node: str, ip: str) -> str:
        return self.ssh(node, f"ip route get {ip}").split(" dev ")[1].split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="lab", help="the lab's name (its cluster is created)")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--record", action="store_true", help="append the figures to BENCHMARKS.md")
    args = parser.parse_args()
    b = Bench(Lab(args.lab, args.state_dir))
    web = b.start()
    try:
        cp1_ip = b.kubectl("-n", NS, "get", "pod", "on-cp1", "-o", "jsonpath={.status.podIP}")
        same_node = b.fetch_mib_s("on-w2", web)
        assert b.route("w2", cp1_ip) == "host0", "w2 should route cp1's block directly"
        direct = b.fetch_mib_s("on-cp1", web)
        b.ssh("cp1", "birdc disable peer_w2 >/dev/null")  # both ends drop the direct route
        try:
            time.sleep(2)
            assert b.route("w2", cp1_ip) == "pod-vxlan" and b.route("cp1", web) == "pod-vxlan"
            encapsulated = b.fetch_mib_s("on-cp1", web)
        finally:
            b.ssh("cp1", "birdc enable peer_w2 >/dev/null")
        cross_subnet = b.fetch_mib_s("on-w1", web)
    finally:
        b.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")
    ratio = encapsulated / direct
    print(f"within a node (the CNI bridge, never encapsulated): {same_node:.0f} MiB/s")
    print(f"across nodes, direct (same subnet): {direct:.0f} MiB/s")
    print(f"across nodes, VXLAN (same nodes, BGP session off): {encapsulated:.0f} MiB/s; ratio {ratio:.2f}")
    print(f"across subnets (host router + VXLAN): {cross_subnet:.0f} MiB/s")
    if args.record:
        record(
            "pod-to-pod throughput, VXLAN against direct (bench/encap.py)",
            [
                "within a node MiB/s",
                "across nodes direct MiB/s",
                "across nodes VXLAN MiB/s",
                "VXLAN / direct",
                "across subnets (router + VXLAN) MiB/s",
                "tool",
            ],
            [
                f"{same_node:.0f}",
                f"{direct:.0f}",
                f"{encapsulated:.0f}",
                f"{ratio:.2f}",
                f"{cross_subnet:.0f}",
                f"busybox httpd + nc, {MIB} MiB, median of 3",
            ],
        )


if __name__ == "__main__":
    main()
