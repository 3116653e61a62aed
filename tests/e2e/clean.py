"""What a reset must leave on a node: nothing of the cluster's pods, network or mounts.
``leftovers`` looks at one node through testinfra and names everything it finds."""

from __future__ import annotations

import json
from typing import Any

# A Deployment with two containers per pod (an httpd and a sleep, each beside its pod's
# pause sandbox), one pod per node, behind a NodePort Service (kube-proxy's rules).
WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: reset-me, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: reset-me}}}}
  template:
    metadata: {{labels: {{app: reset-me}}}}
    spec:
      tolerations: [{{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}}]
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - {{topologyKey: kubernetes.io/hostname, labelSelector: {{matchLabels: {{app: reset-me}}}}}}
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: [sh, -c, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        - name: sleeper
          image: {image}
          imagePullPolicy: Never
          command: [sleep, "86400"]
---
apiVersion: v1
kind: Service
metadata: {{name: reset-me, namespace: default}}
spec:
  type: NodePort
  selector: {{app: reset-me}}
  ports: [{{port: 80, targetPort: 8080}}]
"""

WORKLOAD_PROCESSES = ("pause", "httpd", "sleep", "containerd-shim", "coredns")
TUNNEL_KINDS = ("ipip", "gre", "gretap", "sit", "vxlan", "geneve", "wireguard", "ip6tnl")
# the node's own link to the lab bridge (systemd-nspawn's veth); not the cluster's
LAB_LINKS = ("lo", "host0")
# kube-proxy's nftables mode keeps its rules in its own tables (`table ip kube-proxy`)
MARKS = ("KUBE-", "CNI-", "provisioner-nat-outgoing", "kube-proxy")


def leftovers(host: Any) -> list[str]:
    """Everything of the cluster's workloads, network and mounts still on the node."""
    found: list[str] = []
    procs = host.check_output("ps -eo comm=").split()
    found += [f"process {p}" for p in sorted(set(procs)) if p in WORKLOAD_PROCESSES]
    netns = host.run("ls -1 /run/netns").stdout.split()
    found += [f"network namespace {n}" for n in netns if n.startswith("cni-")]
    for link in json.loads(host.check_output("ip -json -details link show")):
        kind = link.get("linkinfo", {}).get("info_kind", "")
        name = link["ifname"]
        if name in LAB_LINKS:
            continue
        if kind == "veth" or kind in TUNNEL_KINDS or name in ("cni0", "kube-ipvs0"):
            found.append(f"interface {name} ({kind or 'device'})")
    for cmd in ("iptables-save", "ip6tables-save", "nft list ruleset"):
        out = host.run(cmd)
        assert out.rc == 0, f"{cmd}: {out.stderr}"
        found += [f"{cmd}: {line}" for line in out.stdout.splitlines() if any(m in line for m in MARKS)]
    for target in host.check_output("findmnt -rno TARGET").splitlines():
        if target.startswith(("/var/lib/kubelet", "/run/containerd", "/var/lib/containerd")):
            found.append(f"mount {target}")
    return found
