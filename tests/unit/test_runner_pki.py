"""Unit tests of the runner (a real playbook on localhost through ansible-runner: stats,
and a failing task named by host, task and message) and of the controller-side PKI
(created once, never regenerated; renew keeps the CAs; SANs follow new control planes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography import x509

from provisioner import pki, spec
from provisioner.runner import PlaybookFailed, run_playbook

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "inventory" / "sample" / "ha.yaml"
LOCAL = {"all": {"hosts": {"here": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
PLAY = """
- name: A tiny play
  hosts: all
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        dest: "{{ target }}"
        content: "hello\\n"
        mode: "0644"
"""
FAILING = (
    PLAY
    + """
    - name: Give up on purpose
      ansible.builtin.fail:
        msg: boom
"""
)


@pytest.fixture(autouse=True)
def no_mitogen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVISIONER_MITOGEN", "0")


def test_a_playbook_runs_and_reports_per_host_stats(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(PLAY)
    target = tmp_path / "out.txt"
    log = tmp_path / "run.log"
    first = run_playbook(
        tmp_path / "play.yml", LOCAL, tmp_path / "runner", log_path=log, extravars={"target": str(target)}
    )
    assert first.ok and first.stats["here"].changed == 1 and target.read_text() == "hello\n"
    again = run_playbook(tmp_path / "play.yml", LOCAL, tmp_path / "runner", extravars={"target": str(target)})
    assert again.ok and again.stats["here"].changed == 0 and again.stats["here"].ok == 1
    assert "Write a file" in log.read_text()


def test_a_failing_task_is_named_with_host_and_message(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(FAILING)
    result = run_playbook(tmp_path / "play.yml", LOCAL, tmp_path / "runner", extravars={"target": str(tmp_path / "x")})
    assert not result.ok and result.stats["here"].failed == 1
    [failure] = result.failures
    assert (failure.host, failure.task, failure.message) == ("here", "Give up on purpose", "boom")
    assert "here: task 'Give up on purpose' failed: boom" in str(PlaybookFailed(result))


def test_pki_is_created_once_and_never_regenerated(tmp_path: Path) -> None:
    s = spec.load(HA)
    made = pki.ensure(s, tmp_path, "10.233.0.1", 6444)
    assert "ca.crt" in made and "etcd/ca.crt" in made and "apiserver.crt" in made
    snapshot = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert pki.ensure(s, tmp_path, "10.233.0.1", 6444) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == snapshot
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_renew_reissues_leaves_and_keeps_the_cas(tmp_path: Path) -> None:
    s = spec.load(HA)
    pki.ensure(s, tmp_path, "10.233.0.1", 6444)
    ca, ca_key = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "ca.key").read_bytes()
    before = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    renewed = pki.ensure(s, tmp_path, "10.233.0.1", 6444, renew=True)
    assert "apiserver.crt" in renewed and "ca.crt" not in renewed
    after = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    assert after.serial_number != before.serial_number
    assert (tmp_path / "ca.crt").read_bytes() == ca and (tmp_path / "ca.key").read_bytes() == ca_key
    rows = {r["path"]: r for r in pki.expiry(tmp_path)}
    assert rows["ca.crt"]["days_left"] > 3000 and 360 <= rows["apiserver.crt"]["days_left"] <= 365


def test_a_new_control_plane_gets_into_the_api_server_certificate(tmp_path: Path) -> None:
    s = spec.load(HA)
    pki.ensure(s, tmp_path, "10.233.0.1", 6444)
    key = (tmp_path / "apiserver.key").read_bytes()
    data = s.model_dump(mode="json")
    data["nodes"].append({"name": "cp4", "address": "192.168.250.14", "roles": ["control-plane"]})
    made = pki.ensure(spec.from_dict(data), tmp_path, "10.233.0.1", 6444)
    assert "apiserver.crt" in made and "ca.crt" not in made
    cert = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cp4" in sans.get_values_for_type(x509.DNSName)
    assert (tmp_path / "apiserver.key").read_bytes() == key  # same key, new names


def test_the_log_ends_with_the_slowest_tasks(tmp_path: Path) -> None:
    (tmp_path / "play.yml").write_text(PLAY)
    log = tmp_path / "run.log"
    run_playbook(
        tmp_path / "play.yml", LOCAL, tmp_path / "runner", log_path=log, extravars={"target": str(tmp_path / "o")}
    )
    tail = log.read_text().split("slowest tasks (wall seconds, all hosts together):\n")[1]
    assert "Write a file" in tail
