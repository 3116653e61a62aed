"""Samples and events of one experiment, and the arithmetic over them (pure, unit-tested).

Times are seconds since the epoch on the controller's clock; events read from the nodes
(etcd's log) carry the nodes' clocks, which NTP keeps within milliseconds of it.

- availability: the share of successful probes in a window, in percent;
- longest gap: the longest time the service was not seen answering: from the first failed
  probe of a run of failures to the next success (or the end of the window);
- detection: from the injection to the first event that shows the cluster noticed;
- recovery: from the end of the fault to the moment after which every sample of every
  health series (canary Ready, canary answering) stays good; it counts only once that
  has lasted ``settle`` seconds;
- election: when the fault took the etcd leader, from the injection to a new leader.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Sample:
    t: float
    ok: bool
    detail: str = ""


@dataclass(frozen=True, order=True)
class Event:
    t: float
    kind: str  # inject, fault-end, node-not-ready, node-ready, leader-lost, leader-elected, peer-inactive, ...
    subject: str = ""  # node or member name
    detail: str = ""


# Event kinds that show detection, per experiment signal (experiments.Signal values)
DETECTION_KINDS = {
    # a replacement pod can be Ready before the observer's next look: its creation counts too
    "pod-gone": ("canary-not-ready", "canary-pod-created"),
    "node-not-ready": ("node-not-ready",),
    "leader-change": ("peer-inactive", "leader-lost", "election-started", "leader-elected"),
}


def window(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.t <= end]


def availability(samples: Sequence[Sample], start: float, end: float) -> float | None:
    """Percent of successful samples in [start, end]; None when there is none."""
    inside = window(samples, start, end)
    if not inside:
        return None
    return 100.0 * sum(s.ok for s in inside) / len(inside)


def longest_gap(samples: Sequence[Sample], start: float, end: float) -> float:
    """The longest run of failures in [start, end], from its first failed sample to the next
    success (or to ``end`` when the window ends in it). 0 when every sample succeeded."""
    longest = 0.0
    gap_start: float | None = None
    for s in sorted(window(samples, start, end)):
        if not s.ok and gap_start is None:
            gap_start = s.t
        elif s.ok and gap_start is not None:
            longest = max(longest, s.t - gap_start)
            gap_start = None
    if gap_start is not None:
        longest = max(longest, end - gap_start)
    return longest


def first_event(
    events: Iterable[Event], kinds: Iterable[str], since: float, subject: str | None = None
) -> Event | None:
    wanted = set(kinds)
    hits = [e for e in events if e.kind in wanted and e.t >= since and (subject is None or e.subject == subject)]
    return min(hits, default=None)


def detection(events: Iterable[Event], signal: str, injected: float, subject: str | None = None) -> float | None:
    """Seconds from the injection to the first event that shows the fault was noticed."""
    hit = first_event(events, DETECTION_KINDS[signal], injected, subject)
    return None if hit is None else max(0.0, hit.t - injected)


def _good_from(samples: Sequence[Sample], since: float) -> float | None:
    """The moment (>= ``since``) from which every sample of one series is good; None when its
    last sample is bad (or it has none since then)."""
    after = sorted(s for s in samples if s.t >= since)
    if not after:
        return None
    last_bad = max((i for i, s in enumerate(after) if not s.ok), default=None)
    if last_bad is None:
        return since
    return after[last_bad + 1].t if last_bad + 1 < len(after) else None


def recovered_at(health: Sequence[Sequence[Sample]], since: float, settle: float) -> float | None:
    """The moment (>= ``since``) after which every sample of every health series is good,
    provided each series has samples ``settle`` seconds past it; None while that is not so."""
    moments = [_good_from(series, since) for series in health]
    if not moments or any(m is None for m in moments):
        return None
    moment = max(m for m in moments if m is not None)
    ends = [max(s.t for s in series) for series in health]
    return moment if min(ends) - moment >= settle else None


def election(events: Iterable[Event], injected: float) -> float | None:
    """Seconds the members were without a leader: from the injection (the fault that took the
    leader) to the first leader elected after it. None when no leader was elected."""
    elected = first_event(events, ("leader-elected",), injected)
    return None if elected is None else elected.t - injected


def at(samples: Sequence[Sample], t: float) -> Sample | None:
    """The last sample at or before ``t``."""
    ordered = sorted(samples)
    i = bisect.bisect_right([s.t for s in ordered], t)
    return ordered[i - 1] if i else None


@dataclass
class Timeline:
    """Everything one run observed. ``series``: probe name -> samples; ``events`` in time order."""

    series: dict[str, list[Sample]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def add(self, name: str, sample: Sample) -> None:
        self.series.setdefault(name, []).append(sample)

    def event(self, event: Event) -> None:
        self.events.append(event)
        self.events.sort()

    def time_of(self, kind: str) -> float | None:
        hit = next((e for e in self.events if e.kind == kind), None)
        return None if hit is None else hit.t

    def as_dict(self, origin: float) -> dict[str, Any]:
        """JSON-ready, times relative to ``origin`` (the injection)."""
        return {
            "series": {
                name: [[round(s.t - origin, 3), s.ok, *([s.detail] if s.detail else [])] for s in samples]
                for name, samples in self.series.items()
            },
            "events": [
                {"t": round(e.t - origin, 3), "kind": e.kind, "subject": e.subject, "detail": e.detail}
                for e in self.events
            ],
        }
