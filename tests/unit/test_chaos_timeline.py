"""Unit tests of the timeline arithmetic (provisioner.chaos.timeline): availability, longest
gap, detection, recovery (with its settle time) and the etcd election time."""

from __future__ import annotations

import pytest

from provisioner.chaos.timeline import (
    Event,
    Sample,
    Timeline,
    availability,
    detection,
    election,
    longest_gap,
    recovered_at,
)


def series(pattern: str, start: float = 0.0, tick: float = 0.5) -> list[Sample]:
    """'++--+' -> samples every ``tick`` seconds from ``start``: + answered, - did not."""
    return [Sample(start + i * tick, c == "+") for i, c in enumerate(pattern)]


def test_availability() -> None:
    s = series("++++--++++")  # 0.0 .. 4.5
    assert availability(s, 0, 4.5) == 80.0
    assert availability(s, 2.0, 2.5) == 0.0
    assert availability(s, 10, 20) is None


def test_longest_gap_from_first_failure_to_next_success() -> None:
    s = series("++-+---++")  # failures at 1.0, then 2.0 to 3.0; the next success at 3.5
    assert longest_gap(s, 0, 4.0) == 1.5
    assert longest_gap(series("+++"), 0, 1.0) == 0.0
    # a window that ends inside a failure counts to its end
    assert longest_gap(series("++---"), 0, 3.0) == 2.0


def test_detection_first_matching_event_after_the_injection() -> None:
    events = [
        Event(5.0, "node-not-ready", "w2"),  # another node
        Event(1.0, "node-not-ready", "w1"),  # before the injection
        Event(27.5, "node-not-ready", "w1"),
        Event(40.0, "node-not-ready", "w1"),
    ]
    assert detection(events, "node-not-ready", 10.0, "w1") == 17.5
    assert detection(events, "node-not-ready", 50.0, "w1") is None
    leader = [Event(11.2, "leader-lost", "cp1"), Event(12.4, "leader-elected", "cp2")]
    assert detection(leader, "leader-change", 10.0) == pytest.approx(1.2)


def test_recovery_waits_for_every_series_and_the_settle_time() -> None:
    ready = series("++--+++++++++++++++++++", tick=1.0)  # Ready again from 4.0
    answering = series("+" * 8 + "-" + "+" * 37, tick=0.5)  # one failure at 4.0, good from 4.5
    assert recovered_at([ready, answering], since=1.0, settle=10) == 4.5
    # not settled yet: the samples after the moment span less than 10 s
    assert recovered_at([ready[:10], answering], since=1.0, settle=10) is None
    # still failing at the end: not recovered
    assert recovered_at([series("++---", tick=1.0)], since=0, settle=0) is None
    # nothing ever went wrong after the fault ended: recovered at once
    assert recovered_at([series("+" * 30)], since=3.0, settle=5) == 3.0


def test_election_from_the_injection_to_a_new_leader() -> None:
    events = [
        Event(9.0, "leader-elected", "cp1"),  # an old election
        Event(10.0, "inject", "cp1"),
        Event(11.05, "leader-lost", "cp1"),
        Event(11.30, "election-started", "cp2"),
        Event(11.42, "leader-elected", "cp3"),
        Event(11.43, "leader-elected", "cp3"),
    ]
    assert election(events, 10.0) == pytest.approx(1.42)
    assert election([Event(10.0, "inject", "cp1")], 10.0) is None


def test_timeline_json_is_relative_to_the_injection() -> None:
    tl = Timeline()
    tl.add("api", Sample(100.25, True))
    tl.add("api", Sample(100.75, False, "HTTP 503"))
    tl.event(Event(101.0, "node-not-ready", "w1"))
    tl.event(Event(100.0, "inject", "w1", "kill-node"))
    data = tl.as_dict(origin=100.0)
    assert data["series"]["api"] == [[0.25, True], [0.75, False, "HTTP 503"]]
    assert [e["kind"] for e in data["events"]] == ["inject", "node-not-ready"]
    assert tl.time_of("node-not-ready") == 101.0


class FakeObserver:
    """Unit-test fake of the observer's API proxy: answers from the dicts it is handed."""

    def __init__(self) -> None:
        self.pods: list[str] = []

    def json(self, path: str) -> dict[str, object]:
        if path.startswith("/api/v1/nodes"):
            return {"items": []}
        if "/deployments/" in path:
            return {"spec": {"replicas": 2}}
        ready = [{"type": "Ready", "status": "True"}]
        return {"items": [{"metadata": {"name": n}, "status": {"conditions": ready}} for n in self.pods]}


def test_a_replacement_pod_counts_as_detection_even_when_never_seen_not_ready() -> None:
    """The ReplicaSet's new pod can be Ready before the observer looks again (CI saw it)."""
    from provisioner.chaos.probe import Pollers

    obs, tl = FakeObserver(), Timeline()
    pollers = Pollers(obs, obs, "chaos", "token", tl)  # type: ignore[arg-type]
    obs.pods = ["canary-a", "canary-b"]
    pollers.observe_once()
    obs.pods = ["canary-a", "canary-c"]  # b deleted, c already Ready at the next look
    pollers.observe_once()
    kinds = [(e.kind, e.detail) for e in tl.events]
    assert ("canary-pod-created", "canary-c") in kinds
    assert not any(k == "canary-not-ready" for k, _ in kinds)
    assert detection(tl.events, "pod-gone", tl.events[0].t - 1.0) is not None
