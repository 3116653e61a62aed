"""The cluster's PKI, made on the controller (cryptography) in the cluster directory.

Where the keys live, and why:
- ``pki/ca.key`` (Kubernetes CA): in the cluster directory (0600, dir 0700), and on the
  control planes, where kube-controller-manager signs CSRs with it (as kubeadm does).
- ``pki/etcd/ca.key`` and ``pki/front-proxy-ca.key``: only in the cluster directory. No
  node needs them, so no node has them; new member certs are signed on the controller.
- Every component certificate is issued here and copied to the node that uses it.

Everything is created once: an existing file is never regenerated. A certificate is
issued again only when it is missing, when its names no longer cover what the spec asks
(a control plane was added: the API server certificate gains its address; the key is
kept), or when ``renew`` is asked for explicitly. CAs are never issued again.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioner.defaults import API_PORT, KUBE_ROUTER_USER
from provisioner.errors import ProvisionerError
from provisioner.spec import ClusterSpec

CA_DAYS = 3650
CERT_DAYS = 365


class PkiError(ProvisionerError):
    """The PKI in the cluster directory is incomplete or does not match the cluster."""


@dataclass(frozen=True)
class CertRequest:
    path: str  # relative to pki/, without extension
    cn: str
    ca: str  # ca, etcd/ca, front-proxy-ca
    org: str | None = None
    server: bool = False
    client: bool = False
    sans: tuple[str, ...] = ()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def _covers(crt: Path, sans: tuple[str, ...]) -> bool:
    """Whether the certificate already names every SAN asked for (extra names are fine)."""
    if not sans:
        return True
    have = _sans(x509.load_pem_x509_certificate(crt.read_bytes()))
    return {str(ipaddress.ip_address(s)) if _is_ip(s) else s for s in sans} <= have


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Pki:
    def __init__(self, root: Path):
        self.root = root

    # -- files ------------------------------------------------------------------------------
    def _load_ca(self, ca: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate((self.root / f"{ca}.crt").read_bytes())
        key = serialization.load_pem_private_key((self.root / f"{ca}.key").read_bytes(), None)
        return cert, key  # type: ignore[return-value]

    def ensure_ca(self, ca: str, cn: str) -> bool:
        crt, keyf = self.root / f"{ca}.crt", self.root / f"{ca}.key"
        if crt.exists() and keyf.exists():
            return False
        if crt.exists() or keyf.exists():
            have, lost = (crt, keyf) if crt.exists() else (keyf, crt)
            raise PkiError(
                f"{lost} is missing while {have} exists; restore both from a backup of the cluster directory "
                "(a new CA would not be trusted by the running cluster)"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(keyf, _key_pem(key))
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return True

    def issue(self, req: CertRequest, force: bool = False) -> bool:
        crt, keyf = self.root / f"{req.path}.crt", self.root / f"{req.path}.key"
        if crt.exists() and keyf.exists() and not force and _covers(crt, req.sans):
            return False
        ca_cert, ca_key = self._load_ca(req.ca)
        key = (
            serialization.load_pem_private_key(keyf.read_bytes(), None)
            if keyf.exists()
            else ec.generate_private_key(ec.SECP256R1())
        )
        usages = []
        if req.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if req.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(req.cn, req.org))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=CERT_DAYS), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if req.sans:
            names: list[x509.GeneralName] = []
            for san in req.sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        if not keyf.exists():
            _write_private(keyf, _key_pem(key))  # type: ignore[arg-type]
        crt.parent.mkdir(parents=True, exist_ok=True)
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return True

    def ensure_sa_keys(self) -> bool:
        keyf, pub = self.root / "sa.key", self.root / "sa.pub"
        if keyf.exists() and pub.exists():
            return False
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(keyf, _key_pem(key))
        pub.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return True

    def ensure_encryption_config(self) -> bool:
        path = self.root / "encryption-config.yaml"
        if path.exists():
            return False
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [
                {
                    "resources": ["secrets"],
                    "providers": [{"aescbc": {"keys": [{"name": "key1", "secret": secret}]}}, {"identity": {}}],
                }
            ],
        }
        _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
        return True

    def kubeconfig(self, name: str, cert: str, server: str, user: str) -> bool:
        path = self.root / "kubeconfigs" / f"{name}.kubeconfig"
        crt, key = self.root / f"{cert}.crt", self.root / f"{cert}.key"
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cluster",
                    "cluster": {"server": server, "certificate-authority-data": b64(self.root / "ca.crt")},
                }
            ],
            "users": [{"name": user, "user": {"client-certificate-data": b64(crt), "client-key-data": b64(key)}}],
            "contexts": [{"name": "default", "context": {"cluster": "cluster", "user": user}}],
            "current-context": "default",
        }
        data = yaml.safe_dump(config, sort_keys=False).encode()
        if path.exists() and path.read_bytes() == data:
            return False
        _write_private(path, data)
        return True


def requests(spec: ClusterSpec, service_ip: str) -> list[CertRequest]:
    """Every certificate the cluster needs, derived from the spec alone."""
    domain = spec.kubernetes.cluster_domain
    reqs: list[CertRequest] = []
    for n in spec.etcd_members:
        sans = (n.name, n.address, "localhost", "127.0.0.1")
        reqs.append(CertRequest(f"etcd/{n.name}-server", n.name, "etcd/ca", server=True, client=True, sans=sans))
        reqs.append(CertRequest(f"etcd/{n.name}-peer", n.name, "etcd/ca", server=True, client=True, sans=sans))
    reqs.append(CertRequest("etcd/healthcheck-client", "kube-etcd-healthcheck-client", "etcd/ca", client=True))
    reqs.append(CertRequest("apiserver-etcd-client", "kube-apiserver-etcd-client", "etcd/ca", client=True))
    cp_sans = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
        "localhost",
        "127.0.0.1",
        service_ip,
    ]
    for n in spec.control_planes:
        cp_sans += [n.name, n.address]
    if spec.api_vip is not None:  # clients reach the API servers through the VIP
        cp_sans.append(spec.api_vip.address)
    reqs.append(CertRequest("apiserver", "kube-apiserver", "ca", server=True, sans=tuple(cp_sans)))
    reqs.append(
        CertRequest(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "ca", org="system:masters", client=True
        )
    )
    reqs.append(CertRequest("front-proxy-client", "front-proxy-client", "front-proxy-ca", client=True))
    reqs.append(CertRequest("controller-manager", "system:kube-controller-manager", "ca", client=True))
    reqs.append(CertRequest("scheduler", "system:kube-scheduler", "ca", client=True))
    reqs.append(CertRequest("admin", "kubernetes-admin", "ca", org="system:masters", client=True))
    reqs.append(CertRequest("kube-proxy", "system:kube-proxy", "ca", client=True))
    if spec.addons.metrics_server.enabled:  # its serving certificate, which the APIService verifies
        svc = "metrics-server.kube-system.svc"
        sans = ("metrics-server", "metrics-server.kube-system", svc, f"{svc}.{domain}")
        reqs.append(CertRequest("metrics-server", svc, "ca", server=True, sans=sans))
    if spec.network.policy:  # kube-router's policy controller, one client certificate for every node
        reqs.append(CertRequest("kube-router", KUBE_ROUTER_USER, "ca", client=True))
    for n in spec.nodes:
        reqs.append(
            CertRequest(
                f"nodes/{n.name}-kubelet-client", f"system:node:{n.name}", "ca", org="system:nodes", client=True
            )
        )
        reqs.append(CertRequest(f"nodes/{n.name}-kubelet-server", n.name, "ca", server=True, sans=(n.name, n.address)))
    return reqs


def ensure(spec: ClusterSpec, root: Path, service_ip: str, lb_port: int, renew: bool = False) -> list[str]:
    """Create whatever is missing; return the paths created (empty on a re-run).

    ``renew`` re-issues every component certificate (same CAs, same keys); it is only
    used by the explicit `cluster certs renew`.
    """
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    pki = Pki(root)
    made: list[str] = []
    for ca, cn in (("ca", "kubernetes-ca"), ("etcd/ca", "etcd-ca"), ("front-proxy-ca", "front-proxy-ca")):
        if pki.ensure_ca(ca, cn):
            made.append(f"{ca}.crt")
    if pki.ensure_sa_keys():
        made.append("sa.key")
    if pki.ensure_encryption_config():
        made.append("encryption-config.yaml")
    for req in requests(spec, service_ip):
        if pki.issue(req, force=renew):
            made.append(f"{req.path}.crt")
    local = f"https://127.0.0.1:{lb_port}"
    kubeconfigs = [
        ("controller-manager", "controller-manager", local, "system:kube-controller-manager"),
        ("scheduler", "scheduler", local, "system:kube-scheduler"),
        ("kube-proxy", "kube-proxy", local, "system:kube-proxy"),
        ("admin-local", "admin", local, "kubernetes-admin"),
    ]
    if spec.network.policy:
        kubeconfigs.append(("kube-router", "kube-router", local, KUBE_ROUTER_USER))
    kubeconfigs += [
        (f"{n.name}-kubelet", f"nodes/{n.name}-kubelet-client", local, f"system:node:{n.name}") for n in spec.nodes
    ]
    for name, cert, server, user in kubeconfigs:
        if pki.kubeconfig(name, cert, server, user):
            made.append(f"kubeconfigs/{name}.kubeconfig")
    return made


def api_endpoint(spec: ClusterSpec) -> str:
    """Where clients reach the API: the VIP when the cluster file sets one, else the first
    control plane (clients are then pinned to it)."""
    host = spec.api_vip.address if spec.api_vip is not None else spec.control_planes[0].address
    return f"https://{host}:{API_PORT}"


def _vip_entries(spec: ClusterSpec, ca_data: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The admin kubeconfig's cluster and context for the API VIP, both named after the cluster."""
    cluster = {"name": spec.name, "cluster": {"server": api_endpoint(spec), "certificate-authority-data": ca_data}}
    return cluster, {"name": spec.name, "context": {"cluster": spec.name, "user": "admin"}}


def admin_kubeconfig(spec: ClusterSpec, pki_root: Path, target: Path, renew: bool = False) -> bool:
    """The admin kubeconfig for the controller: one context per control plane and, when the
    cluster file sets ``api_vip``, one for the VIP (named after the cluster), which is current;
    without a VIP the first control plane's is current.

    Written once (0600); an existing file keeps its credentials unless ``renew`` (certs renew),
    and only where it points is brought in line with the cluster file (``point_admin_kubeconfig``).
    """
    if target.exists() and not renew:
        return point_admin_kubeconfig(spec, target)
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    ca_data = b64(pki_root / "ca.crt")
    clusters, contexts = [], []
    for n in spec.control_planes:
        clusters.append(
            {
                "name": f"{spec.name}-{n.name}",
                "cluster": {"server": f"https://{n.address}:{API_PORT}", "certificate-authority-data": ca_data},
            }
        )
        contexts.append(
            {"name": f"{spec.name}-{n.name}", "context": {"cluster": f"{spec.name}-{n.name}", "user": "admin"}}
        )
    if spec.api_vip is not None:
        vip_cluster, vip_context = _vip_entries(spec, ca_data)
        clusters.insert(0, vip_cluster)
        contexts.insert(0, vip_context)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "contexts": contexts,
        "current-context": contexts[0]["name"],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(pki_root / "admin.crt"),
                    "client-key-data": b64(pki_root / "admin.key"),
                },
            }
        ],
    }
    _write_private(target, yaml.safe_dump(config, sort_keys=False).encode())
    return True


def point_admin_kubeconfig(spec: ClusterSpec, target: Path) -> bool:
    """Point an existing admin kubeconfig where the cluster file says clients reach the API,
    changing nothing else (users and client certificates stay; nothing is re-issued): with
    ``api_vip``, a cluster and a context named after the cluster for ``https://VIP:6443``, made
    current when they are new (when they exist, only their server is rewritten, and a context
    the user chose stays current); without, those are dropped again and, if the VIP's was
    current, the first control plane's context is. Returns whether the file changed."""
    config = yaml.safe_load(target.read_text()) or {}
    before = yaml.safe_dump(config, sort_keys=False)
    clusters: list[dict[str, Any]] = config.setdefault("clusters", []) or []
    contexts: list[dict[str, Any]] = config.setdefault("contexts", []) or []
    config["clusters"], config["contexts"] = clusters, contexts
    mine = [c for c in clusters if c.get("name") == spec.name]
    if spec.api_vip is not None:
        user = next((c["context"].get("user") for c in contexts if c.get("context")), "admin")
        ca_data = next((c["cluster"].get("certificate-authority-data") for c in clusters if c.get("cluster")), "")
        vip_cluster, vip_context = _vip_entries(spec, ca_data)
        vip_context["context"]["user"] = user
        if mine:  # rewritten in place: the server only
            mine[0].setdefault("cluster", {})["server"] = api_endpoint(spec)
        else:  # the VIP is new: clients use it from now on
            clusters.insert(0, vip_cluster)
            config["current-context"] = spec.name
        if not any(c.get("name") == spec.name for c in contexts):
            contexts.insert(0, vip_context)
    else:
        config["clusters"] = [c for c in clusters if c.get("name") != spec.name]
        config["contexts"] = [c for c in contexts if c.get("name") != spec.name]
        if config.get("current-context") == spec.name:
            first = f"{spec.name}-{spec.control_planes[0].name}"
            names = [c.get("name") for c in config["contexts"]]
            config["current-context"] = first if first in names else (names[0] if names else "")
    after = yaml.safe_dump(config, sort_keys=False)
    if after == before:
        return False
    _write_private(target, after.encode())
    return True


def expiry(root: Path) -> list[dict[str, Any]]:
    """Every certificate under ``root`` with its subject and days until it expires."""
    rows = []
    now = _now()
    for crt in sorted(root.rglob("*.crt")):
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        left = cert.not_valid_after_utc - now
        rows.append(
            {
                "path": str(crt.relative_to(root)),
                "subject": cert.subject.rfc4514_string(),
                "expires": cert.not_valid_after_utc.strftime("%Y-%m-%d"),
                "days_left": left.days,
            }
        )
    return rows
