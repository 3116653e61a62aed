"""The cluster file's ``hardening`` section: its validation rules, the variables it puts in
group_vars/all, and the units and files the roles render from them (with Ansible's own
templating, against group_vars built by provisioner.defaults.group_vars)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import defaults, spec
from tests.unit import role_templates
from tests.unit.role_templates import host_vars

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventory" / "sample" / "ha.yaml"


def cluster(**hardening: Any) -> spec.ClusterSpec:
    data = spec.load(SAMPLE).model_dump(mode="json")
    data["hardening"] = hardening
    return spec.from_dict(data)


def problems(**hardening: Any) -> list[str]:
    with pytest.raises(spec.SpecError) as err:
        cluster(**hardening)
    return err.value.problems


def render(role: str, template: str, c: spec.ClusterSpec, **host: Any) -> str:
    """A role's template as Ansible renders it on the first control plane."""
    variables = {**host_vars(c), "node_cgroup_version": 2, "node_taints": [], "node_labels": {}, **host}
    return role_templates.render(role, template, variables)


def unit_flags(text: str) -> dict[str, str]:
    out = {}
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("ExecStart="):
            for arg in line.split()[1:]:
                name, _, value = arg.partition("=")
                out[name] = value
    return out


# -- the cluster file ----------------------------------------------------------------------------


def test_defaults_are_on() -> None:
    h = cluster().hardening
    assert h.audit_log.enabled and h.local_bind and h.pod_security.enabled and h.event_rate_limit.enabled
    assert h.seccomp_default and h.protect_kernel_defaults
    assert h.tls.min_version == "VersionTLS12"
    assert all("ECDHE" in s and ("GCM" in s or "CHACHA20" in s) for s in h.tls.cipher_suites)
    assert (h.pod_security.enforce, h.pod_security.warn, h.pod_security.audit) == (
        "baseline",
        "restricted",
        "restricted",
    )
    assert h.pod_security.exempt_namespaces == ["kube-system"]


def test_weak_or_unknown_cipher_named_by_index() -> None:
    lines = problems(tls={"cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_CBC_SHA"]})
    assert any(line.startswith("hardening.tls.cipher_suites[1]: 'TLS_RSA_WITH_AES_128_CBC_SHA'") for line in lines)


def test_ciphers_need_an_ecdsa_suite_for_tls12() -> None:
    lines = problems(tls={"cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]})
    assert any(
        line.startswith("hardening.tls.cipher_suites: the cluster's certificates have ECDSA keys") for line in lines
    )
    # with TLS 1.3 only, the list is not used
    assert cluster(tls={"min_version": "VersionTLS13", "cipher_suites": []}).hardening.tls.min_version == "VersionTLS13"


def test_unknown_tls_version_and_pod_security_level_named() -> None:
    lines = problems(tls={"min_version": "VersionTLS11"}, pod_security={"enforce": "strict"})
    assert any(line.startswith("hardening.tls.min_version:") for line in lines)
    assert any(line.startswith("hardening.pod_security.enforce:") for line in lines)


def test_numbers_and_namespaces_checked() -> None:
    lines = problems(
        audit_log={"max_age_days": 0},
        event_rate_limit={"server_qps": 10, "server_burst": 5},
        pod_security={"exempt_namespaces": ["kube-system", "Bad_NS", "kube-system"]},
    )
    assert "hardening.audit_log.max_age_days: must be 1 or more" in lines
    assert "hardening.event_rate_limit.server_burst: must be at least server_qps" in lines
    assert any(line.startswith("hardening.pod_security.exempt_namespaces[1]:") for line in lines)
    assert "hardening.pod_security.exempt_namespaces[2]: 'kube-system' is listed twice" in lines


def test_unknown_key_gets_a_hint() -> None:
    assert "hardening.seccomp_defaults: unknown key; did you mean `seccomp_default`?" in problems(seccomp_defaults=True)


def test_group_vars_carry_every_setting() -> None:
    gv = defaults.group_vars(cluster(tls={"min_version": "VersionTLS13", "cipher_suites": []}), Path("/state/x"))
    assert gv["tls_min_version"] == "VersionTLS13" and gv["etcd_tls_min_version"] == "TLS1.3"
    assert gv["tls_cipher_suites"] == []
    gv = defaults.group_vars(cluster(protect_kernel_defaults=False, local_bind=False), Path("/state/x"))
    assert gv["kubelet_protect_kernel_defaults"] is False and gv["kube_components_local_bind"] is False
    assert gv["kube_audit_log_maxage"] == 30 and gv["etcd_tls_min_version"] == "TLS1.2"


# -- the rendered units and files ------------------------------------------------------------------


def test_apiserver_flags_by_default() -> None:
    f = unit_flags(render("control_plane", "kube-apiserver.service.j2", cluster()))
    assert f["--audit-log-path"] == "/var/log/kubernetes/audit/audit.log"
    assert f["--audit-policy-file"] == "/etc/kubernetes/audit-policy.yaml"
    assert (f["--audit-log-maxage"], f["--audit-log-maxbackup"], f["--audit-log-maxsize"]) == ("30", "10", "100")
    assert f["--enable-admission-plugins"] == "NodeRestriction,EventRateLimit"
    assert f["--admission-control-config-file"] == "/etc/kubernetes/admission-config.yaml"
    assert f["--tls-min-version"] == "VersionTLS12"
    assert f["--tls-cipher-suites"].split(",") == list(spec.STRONG_CIPHER_SUITES)


def test_apiserver_flags_turned_off() -> None:
    c = cluster(
        audit_log={"enabled": False},
        pod_security={"enabled": False},
        event_rate_limit={"enabled": False},
        tls={"min_version": "VersionTLS13", "cipher_suites": []},
    )
    f = unit_flags(render("control_plane", "kube-apiserver.service.j2", c))
    assert not [k for k in f if k.startswith("--audit")]
    assert "--admission-control-config-file" not in f and "--tls-cipher-suites" not in f
    assert f["--enable-admission-plugins"] == "NodeRestriction"
    assert f["--tls-min-version"] == "VersionTLS13"


def test_audit_log_rotation_rendered_from_the_file() -> None:
    c = cluster(audit_log={"max_age_days": 90, "max_backups": 20, "max_size_mb": 200})
    f = unit_flags(render("control_plane", "kube-apiserver.service.j2", c))
    assert (f["--audit-log-maxage"], f["--audit-log-maxbackup"], f["--audit-log-maxsize"]) == ("90", "20", "200")


@pytest.mark.parametrize("name", ["kube-controller-manager", "kube-scheduler"])
def test_components_bind_to_localhost(name: str) -> None:
    assert unit_flags(render("control_plane", f"{name}.service.j2", cluster()))["--bind-address"] == "127.0.0.1"
    off = unit_flags(render("control_plane", f"{name}.service.j2", cluster(local_bind=False)))
    assert off["--bind-address"] == "0.0.0.0"


def _first_rule(policy: dict[str, Any], group: str, resource: str, user: str = "alice", verb: str = "get") -> str:
    """The level of the first rule matching a resource request (the API server's order)."""
    for rule in policy["rules"]:
        if rule.get("nonResourceURLs"):
            continue
        if rule.get("users") and user not in rule["users"]:
            continue
        if rule.get("userGroups"):
            continue  # alice and the callers below are in none of the rules' groups
        if rule.get("verbs") and verb not in rule["verbs"]:
            continue
        kinds = rule.get("resources")
        if kinds and not any(k.get("group", "") == group and resource in k.get("resources", []) for k in kinds):
            continue
        return str(rule["level"])
    return "None"


def test_audit_policy() -> None:
    policy = yaml.safe_load(render("control_plane", "audit-policy.yaml.j2", cluster()))
    assert policy["kind"] == "Policy" and policy["omitStages"] == ["RequestReceived"]
    levels = {r["level"] for r in policy["rules"]}
    assert levels <= {"None", "Metadata"}, "no rule may log a request or response body"
    for group, resource in (("", "secrets"), ("", "configmaps"), ("authentication.k8s.io", "tokenreviews")):
        for verb in ("get", "create", "update", "watch"):
            assert _first_rule(policy, group, resource, verb=verb) == "Metadata", (resource, verb)
    assert _first_rule(policy, "", "endpoints", user="system:kube-proxy", verb="watch") == "None"
    assert _first_rule(policy, "discovery.k8s.io", "endpointslices", user="system:kube-proxy", verb="watch") == "None"
    assert _first_rule(policy, "", "events", verb="watch") == "None"
    assert _first_rule(policy, "", "events", verb="create") == "Metadata"
    assert _first_rule(policy, "apps", "deployments", verb="create") == "Metadata"
    health = [r for r in policy["rules"] if r.get("nonResourceURLs")]
    assert health and health[0]["level"] == "None"
    assert {"/healthz*", "/readyz*", "/livez*"} <= set(health[0]["nonResourceURLs"])


def test_admission_configuration() -> None:
    c = cluster(pod_security={"enforce": "restricted", "exempt_namespaces": ["kube-system", "monitoring"]})
    config = yaml.safe_load(render("control_plane", "admission-config.yaml.j2", c))
    assert config["kind"] == "AdmissionConfiguration"
    plugins = {p["name"]: p["configuration"] for p in config["plugins"]}
    psa = plugins["PodSecurity"]
    assert psa["defaults"]["enforce"] == "restricted" and psa["defaults"]["warn"] == "restricted"
    assert psa["exemptions"]["namespaces"] == ["kube-system", "monitoring"]
    limits = {limit["type"]: limit for limit in plugins["EventRateLimit"]["limits"]}
    assert (limits["Server"]["qps"], limits["Server"]["burst"]) == (50, 100)
    assert limits["Namespace"]["qps"] == 50
    off = cluster(pod_security={"enabled": False}, event_rate_limit={"enabled": False})
    assert yaml.safe_load(render("control_plane", "admission-config.yaml.j2", off))["plugins"] == []


def test_kubelet_config() -> None:
    config = yaml.safe_load(render("node", "kubelet-config.yaml.j2", cluster()))
    assert config["seccompDefault"] is True and config["protectKernelDefaults"] is True
    assert config["tlsMinVersion"] == "VersionTLS12"
    assert config["tlsCipherSuites"] == list(spec.STRONG_CIPHER_SUITES)
    c = cluster(seccomp_default=False, protect_kernel_defaults=False, tls={"min_version": "VersionTLS13"})
    config = yaml.safe_load(render("node", "kubelet-config.yaml.j2", c))
    assert config["seccompDefault"] is False and config["protectKernelDefaults"] is False
    assert config["tlsMinVersion"] == "VersionTLS13" and "tlsCipherSuites" not in config


def test_etcd_tls_flags() -> None:
    f = unit_flags(render("etcd", "etcd.service.j2", cluster()))
    assert f["--tls-min-version"] == "TLS1.2"
    assert f["--cipher-suites"].split(",") == list(spec.STRONG_CIPHER_SUITES)
    f = unit_flags(render("etcd", "etcd.service.j2", cluster(tls={"min_version": "VersionTLS13"})))
    assert f["--tls-min-version"] == "TLS1.3" and "--cipher-suites" not in f


def test_lab_turns_protect_kernel_defaults_off() -> None:
    source = (ROOT / "provisioner" / "lab" / "manager.py").read_text()
    assert '"hardening": {"protect_kernel_defaults": False}' in source
