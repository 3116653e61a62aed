"""Unit tests of the controller-side PKI (provisioner.pki): everything created once and never
regenerated; certificates signed by the right CA with the right names and usages; renew
re-issues the leaves and keeps the CAs; SANs follow new control planes; expiry() dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from provisioner import pki, spec

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "inventory" / "sample" / "ha.yaml"
SERVICE_IP = "10.233.0.1"
CAS = ("ca", "etcd/ca", "front-proxy-ca")


@pytest.fixture(scope="module")
def ha() -> spec.ClusterSpec:
    return spec.load(HA)


def cert(root: Path, rel: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((root / f"{rel}.crt").read_bytes())


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sans(c: x509.Certificate) -> set[str]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def test_ensure_creates_every_ca_certificate_and_kubeconfig(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    made = pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    reqs = pki.requests(ha, SERVICE_IP)
    expected = (
        {f"{ca}.crt" for ca in CAS}
        | {"sa.key", "encryption-config.yaml"}
        | {f"{r.path}.crt" for r in reqs}
        | {f"kubeconfigs/{k}.kubeconfig" for k in ("controller-manager", "scheduler", "kube-proxy", "admin-local")}
        | {f"kubeconfigs/{n.name}-kubelet.kubeconfig" for n in ha.nodes}
        | {"kubeconfigs/kube-router.kubeconfig"}  # network.policy is on by default
    )
    assert set(made) == expected and len(made) == len(expected)
    for rel in made:
        assert (tmp_path / rel).is_file(), rel
    for r in reqs:
        assert (tmp_path / f"{r.path}.key").is_file()
    assert (tmp_path / "sa.pub").is_file()
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"
    for key in [*tmp_path.rglob("*.key"), tmp_path / "encryption-config.yaml", *tmp_path.rglob("*.kubeconfig")]:
        assert oct(key.stat().st_mode & 0o777) == "0o600", key


def test_every_certificate_is_signed_by_its_ca_with_its_usages(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    for ca in CAS:
        c = cert(tmp_path, ca)
        assert c.issuer == c.subject and c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for r in pki.requests(ha, SERVICE_IP):
        leaf, ca = cert(tmp_path, r.path), cert(tmp_path, r.ca)
        leaf.verify_directly_issued_by(ca)  # raises if another CA (or none) signed it
        assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == r.cn
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert (ExtendedKeyUsageOID.SERVER_AUTH in usages) == r.server, r.path
        assert (ExtendedKeyUsageOID.CLIENT_AUTH in usages) == r.client, r.path
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    api = sans(cert(tmp_path, "apiserver"))
    assert {SERVICE_IP, "127.0.0.1", "kubernetes.default.svc.cluster.local"} <= api
    assert {n.name for n in ha.control_planes} | {n.address for n in ha.control_planes} <= api
    assert sans(cert(tmp_path, "etcd/cp2-peer")) == {"cp2", "192.168.250.12", "localhost", "127.0.0.1"}
    admin = cert(tmp_path, "admin").subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [a.value for a in admin] == ["system:masters"]


def test_a_second_call_creates_nothing_and_changes_no_byte(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    before = snapshot(tmp_path)
    assert pki.ensure(ha, tmp_path, SERVICE_IP, 6444) == []
    assert snapshot(tmp_path) == before
    assert (tmp_path / "ca.key").read_bytes() == before[tmp_path / "ca.key"]


def test_renew_reissues_the_leaves_and_keeps_the_cas(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    before = snapshot(tmp_path)
    serials = {r.path: cert(tmp_path, r.path).serial_number for r in pki.requests(ha, SERVICE_IP)}
    renewed = pki.ensure(ha, tmp_path, SERVICE_IP, 6444, renew=True)
    certs = {f"{r.path}.crt" for r in pki.requests(ha, SERVICE_IP)}
    assert certs <= set(renewed) and not any(f"{ca}.crt" in renewed for ca in CAS)
    for path, serial in serials.items():
        assert cert(tmp_path, path).serial_number != serial, path
        assert (tmp_path / f"{path}.key").read_bytes() == before[tmp_path / f"{path}.key"], "same key"
    for ca in CAS:
        for ext in ("crt", "key"):
            assert (tmp_path / f"{ca}.{ext}").read_bytes() == before[tmp_path / f"{ca}.{ext}"], ca
        cert(tmp_path, "apiserver").verify_directly_issued_by(cert(tmp_path, "ca"))
    assert (tmp_path / "sa.key").read_bytes() == before[tmp_path / "sa.key"]
    assert (tmp_path / "encryption-config.yaml").read_bytes() == before[tmp_path / "encryption-config.yaml"]


def test_a_new_control_plane_gets_into_the_api_server_certificate(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    key = (tmp_path / "apiserver.key").read_bytes()
    data = ha.model_dump(mode="json")
    data["nodes"].append({"name": "cp4", "address": "192.168.250.14", "roles": ["control-plane"]})
    made = pki.ensure(spec.from_dict(data), tmp_path, SERVICE_IP, 6444)
    assert "apiserver.crt" in made and "nodes/cp4-kubelet-server.crt" in made
    assert not any(f"{ca}.crt" in made for ca in CAS) and "etcd/cp1-server.crt" not in made
    assert {"cp4", "192.168.250.14"} <= sans(cert(tmp_path, "apiserver"))
    assert (tmp_path / "apiserver.key").read_bytes() == key  # same key, new names


def test_a_half_missing_ca_is_refused_not_regenerated(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    ca = (tmp_path / "ca.crt").read_bytes()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(pki.PkiError, match=r"ca.key is missing while .*ca.crt exists; restore both from a backup"):
        pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    assert (tmp_path / "ca.crt").read_bytes() == ca and not (tmp_path / "ca.key").exists()


def test_expiry_lists_every_certificate_with_its_dates(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    rows = pki.expiry(tmp_path)
    assert [r["path"] for r in rows] == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.crt"))
    by_path = {r["path"]: r for r in rows}
    today = dt.datetime.now(dt.UTC).date()
    for path, days in (("ca.crt", pki.CA_DAYS), ("etcd/ca.crt", pki.CA_DAYS), ("apiserver.crt", pki.CERT_DAYS)):
        row = by_path[path]
        assert row["days_left"] in (days - 1, days), row
        expires = dt.date.fromisoformat(row["expires"])
        assert (expires - today).days in (days - 1, days, days + 1)
    assert by_path["admin.crt"]["subject"] == "CN=kubernetes-admin,O=system:masters"
    assert pki.expiry(tmp_path / "nothing-here") == []


def test_the_admin_kubeconfig_is_written_once(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path / "pki", SERVICE_IP, 6444)
    target = tmp_path / "admin.kubeconfig"
    assert pki.admin_kubeconfig(ha, tmp_path / "pki", target)
    config = yaml.safe_load(target.read_text())
    assert [c["cluster"]["server"] for c in config["clusters"]] == [
        f"https://{n.address}:6443" for n in ha.control_planes
    ]
    assert config["current-context"] == "ha-cp1" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert not pki.admin_kubeconfig(ha, tmp_path / "pki", target)
