"""What the cluster really runs, as gathered by playbooks/facts.yml (k0sctl's GatherFacts).

Ansible reads the nodes; this module only turns the "Facts | node" results into data.
Every guard (guards.py) decides from these facts, never from files on the controller
alone, so a lost or foreign state directory cannot make a command forget the cluster.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

FACTS_TASK = "Facts | node"


def ca_fingerprint(pem: bytes) -> str | None:
    """sha256 of the certificate (DER), as 'sha256:hex'; None when it is not a certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def _version_from_link(target: str) -> str | None:
    """bin_dir/kubelet -> download_dir/kubernetes/v1.36.3/kubelet gives v1.36.3."""
    if not target:
        return None
    parent = PurePosixPath(target).parent.name
    return parent if parent.startswith("v") else None


def _pod_block(conflist: bytes) -> str | None:
    try:
        data = json.loads(conflist)
    except ValueError:
        return None
    for plugin in data.get("plugins", []):
        for ranges in plugin.get("ipam", {}).get("ranges", []):
            for r in ranges:
                if r.get("subnet"):
                    return str(r["subnet"])
    return None


def _pod_mtu(conflist: bytes) -> int | None:
    """The MTU the CNI bridge gives pods (1500, the plugin's default, when the file sets none)."""
    try:
        data = json.loads(conflist)
    except ValueError:
        return None
    for plugin in data.get("plugins", []):
        if plugin.get("type") == "bridge":
            return int(plugin.get("mtu") or 1500)
    return None


def _encapsulation(unit: bytes) -> str:
    """The tunnel unit's first line says ``encapsulation=vxlan mode=...``; no unit: none."""
    first = unit.decode(errors="replace").partition("\n")[0]
    for word in first.split():
        key, _, value = word.partition("=")
        if key == "encapsulation" and value:
            return value
    return "none"


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text or "")
    except (binascii.Error, ValueError):
        return b""


@dataclass
class NodeFacts:
    name: str
    reachable: bool = True
    kube_version: str | None = None  # the kubelet's installed version
    apiserver_version: str | None = None
    etcd_version: str | None = None
    ca: str | None = None  # fingerprint of the cluster CA the node trusts
    etcd_ca: str | None = None
    pod_block: str | None = None
    # the pod network as the node runs it (None: no CNI configuration, the node is not networked yet)
    encapsulation: str | None = None
    pod_mtu: int | None = None

    @property
    def installed(self) -> bool:
        """Something of the cluster is on this node (it was created or scaled in)."""
        return bool(self.kube_version or self.etcd_version or self.ca)


@dataclass
class K8sNode:
    name: str
    address: str | None
    control_plane: bool
    taints: list[str] = field(default_factory=list)


@dataclass
class ClusterFacts:
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    etcd_members: list[str] | None = None  # None: no etcd member answered
    k8s_nodes: dict[str, K8sNode] | None = None  # None: no API server answered

    @property
    def installed(self) -> list[str]:
        return [n for n, f in self.nodes.items() if f.installed]

    @property
    def unreachable(self) -> list[str]:
        return [n for n, f in self.nodes.items() if not f.reachable]

    def kube_versions(self) -> dict[str, list[str]]:
        """version -> nodes that run it (kubelet and API server binaries)."""
        out: dict[str, list[str]] = {}
        for name, f in self.nodes.items():
            for v in {f.kube_version, f.apiserver_version} - {None}:
                out.setdefault(str(v), []).append(name)
        return out

    def pod_blocks(self) -> dict[str, str]:
        return {n: f.pod_block for n, f in self.nodes.items() if f.pod_block}


def node_facts(name: str, res: dict[str, Any] | None) -> NodeFacts:
    """One host's "Facts | node" result (None: the host did not answer)."""
    if res is None:
        return NodeFacts(name, reachable=False)
    raw = res.get("ansible_facts", {}).get("provisioner_node_facts", {})
    bins = raw.get("binaries", {}) or {}
    files = raw.get("files", {}) or {}
    return NodeFacts(
        name=name,
        kube_version=_version_from_link(bins.get("kubelet", "")),
        apiserver_version=_version_from_link(bins.get("kube-apiserver", "")),
        etcd_version=_version_from_link(bins.get("etcd", "")),
        ca=ca_fingerprint(_b64(files.get("ca", ""))) if files.get("ca") else None,
        etcd_ca=ca_fingerprint(_b64(files.get("etcd_ca", ""))) if files.get("etcd_ca") else None,
        pod_block=_pod_block(_b64(files.get("cni", ""))) if files.get("cni") else None,
        encapsulation=_encapsulation(_b64(files.get("tunnel", ""))) if files.get("cni") else None,
        pod_mtu=_pod_mtu(_b64(files.get("cni", ""))) if files.get("cni") else None,
    )


def _members(text: str) -> list[str] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return sorted(m.get("name") or f"(unstarted {m.get('peerURLs', ['?'])[0]})" for m in data.get("members", []))


def _k8s_nodes(text: str) -> dict[str, K8sNode] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    out = {}
    for item in data.get("items", []):
        meta, status = item.get("metadata", {}), item.get("status", {})
        address = next((a["address"] for a in status.get("addresses", []) if a.get("type") == "InternalIP"), None)
        labels = meta.get("labels", {})
        taints = [
            f"{t['key']}{'=' + t['value'] if t.get('value') else ''}:{t['effect']}"
            for t in item.get("spec", {}).get("taints", []) or []
        ]
        out[meta["name"]] = K8sNode(
            meta["name"], address, "node-role.kubernetes.io/control-plane" in labels, taints=taints
        )
    return out


def from_results(hosts: list[str], results: dict[str, dict[str, Any]]) -> ClusterFacts:
    """Build the facts from each host's "Facts | node" result (missing = unreachable)."""
    facts = ClusterFacts(nodes={h: node_facts(h, results.get(h)) for h in hosts})
    for h in hosts:
        raw = (results.get(h) or {}).get("ansible_facts", {}).get("provisioner_node_facts", {})
        if facts.etcd_members is None and raw.get("etcd_members"):
            facts.etcd_members = _members(raw["etcd_members"])
        if facts.k8s_nodes is None and raw.get("k8s_nodes"):
            facts.k8s_nodes = _k8s_nodes(raw["k8s_nodes"])
    return facts
