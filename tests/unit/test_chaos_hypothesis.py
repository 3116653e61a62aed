"""Unit tests of the hypothesis (provisioner.chaos.hypothesis, defaults.chaos_limits): the
defaults per experiment, the cluster file's overrides, and the verdict over measurements."""

from __future__ import annotations

import pytest

from provisioner import defaults
from provisioner.chaos.hypothesis import HypothesisMissed, Measurements, evaluate, missed_error, verdict
from provisioner.spec import CHAOS_EXPERIMENTS, CHAOS_LIMITS, SpecError, from_dict

NODES = [{"name": "cp1", "address": "192.0.2.11", "roles": ["etcd", "control-plane"]}]


def spec(**sections: object):  # type: ignore[no-untyped-def]
    return from_dict({"name": "unit", "nodes": NODES, **sections})


def test_defaults_follow_the_settings_they_depend_on() -> None:
    s = spec(kubernetes={"node_monitor_grace_period": 20}, etcd={"election_timeout_ms": 2000})
    assert defaults.chaos_limits(s, "kill-node")["detection_s"] == 20 + defaults.NODE_MONITOR_PERIOD_S + 10
    assert defaults.chaos_limits(s, "kill-etcd-leader")["leader_election_s"] == 8.0
    assert defaults.chaos_limits(spec(), "kill-pod")["recovery_s"] == 60.0  # the example
    assert defaults.chaos_limits(spec(), "kill-control-plane")["api_availability_pct"] == 99.0
    for name in CHAOS_EXPERIMENTS:
        assert set(defaults.chaos_limits(spec(), name)) <= set(CHAOS_LIMITS)


def test_the_cluster_file_overrides_and_turns_off_limits() -> None:
    s = spec(chaos={"limits": {"kill-pod": {"recovery_s": 30, "api_availability_pct": None}}})
    limits = defaults.chaos_limits(s, "kill-pod")
    assert limits["recovery_s"] == 30
    assert limits["api_availability_pct"] is None
    assert defaults.chaos_limits(s, "kill-node")["recovery_s"] == 60.0


@pytest.mark.parametrize(
    ("chaos", "problem"),
    [
        ({"limits": {"kill-pods": {}}}, "chaos.limits.kill-pods: not an experiment; did you mean `kill-pod`?"),
        ({"limits": {"kill-pod": {"recovery": 3}}}, "chaos.limits.kill-pod.recovery: unknown limit; did you mean"),
        ({"limits": {"kill-pod": {"api_availability_pct": 101}}}, "a percentage, between 0 and 100"),
        ({"limits": {"kill-pod": {"recovery_s": -1}}}, "must be 0 or more seconds"),
        ({"namespace": "Chaos"}, "chaos.namespace: 'Chaos' is not a namespace name"),
        ({"canary_replicas": 0}, "chaos.canary_replicas: must be between 1 and 50"),
    ],
)
def test_chaos_settings_are_validated(chaos: dict, problem: str) -> None:
    with pytest.raises(SpecError) as exc:
        spec(chaos=chaos)
    assert any(problem in p for p in exc.value.problems), exc.value.problems


def test_grace_period_is_validated() -> None:
    with pytest.raises(SpecError, match=r"kubernetes\.node_monitor_grace_period: must be between 15 and 3600"):
        spec(kubernetes={"node_monitor_grace_period": 5})


LIMITS = {"detection_s": 35.0, "recovery_s": 60.0, "api_availability_pct": 99.0, "canary_availability_pct": 60.0}


def good() -> Measurements:
    return Measurements(
        detection_s=24.0,
        recovery_s=12.5,
        api_availability_pct=100.0,
        api_longest_gap_s=0.0,
        canary_availability_pct=71.0,
        canary_longest_gap_s=2.0,
        data_intact=True,
        steady_after=True,
        not_applicable={"leader_election_s"},
    )


def test_verdict_holds() -> None:
    checks = evaluate(LIMITS, good())
    assert verdict(checks)
    by = {c.name: c for c in checks}
    assert by["detection_s"].status == "ok" and by["detection_s"].limit == "<= 35.0 s"
    assert by["api_availability_pct"].measured == "100.0%"
    assert by["api_longest_gap_s"].status == "off"  # no limit set


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"api_availability_pct": 97.5}, "kill-node: api_availability_pct 97.5%, the hypothesis says >= 99.0%"),
        ({"recovery_s": 61.0}, "kill-node: recovery_s 61.0 s, the hypothesis says <= 60.0 s"),
        ({"detection_s": None}, "kill-node: detection_s not measured, the hypothesis says <= 35.0 s"),
        ({"data_intact": False}, "kill-node: data_intact no, the hypothesis says yes"),
        ({"steady_after": False}, "kill-node: steady_state_after no, the hypothesis says yes"),
    ],
)
def test_a_missed_limit_is_named(change: dict, line: str) -> None:
    m = good()
    for k, v in change.items():
        setattr(m, k, v)
    checks = evaluate(LIMITS, m)
    assert not verdict(checks)
    err = missed_error("kill-node", checks)
    assert isinstance(err, HypothesisMissed) and err.exit_code == 3
    assert err.lines() == [line]


def test_limit_on_the_boundary_holds_and_not_applicable_is_not_missed() -> None:
    m = good()
    m.api_availability_pct = 99.0
    m.detection_s = 35.0
    checks = evaluate({**LIMITS, "leader_election_s": 4.0}, m)
    assert verdict(checks)
    assert {c.name: c.status for c in checks}["leader_election_s"] == "n/a"
