# -*- test-case-name: tests.test_tracker_http -*-
"""
Counters the tracker's adapters feed and its HTTP API reads.

The daemon calls, for every frame it sends or receives,
``count_message(direction, type_name)`` and
``count_bytes(direction, type_name, size_bytes)`` (``direction`` is "in" or
"out", ``type_name`` the ``MessageType`` name, ``size_bytes`` the whole
frame, header included), and ``observe_rtt_ms`` for every PONG.
``/api/v1/stats`` and ``/metrics`` read the totals, the per-second rates
over the last minute, the uptime and the RTT histogram.  No I/O; time from
``clock``.  At most ``MAX_MESSAGE_TYPES`` (direction, type) pairs are kept;
the rest count as "other".

``Stats.calls`` (``CallStats``) holds each function's calls of the last
minute: ``observe_call(fid, latency_s, ok)`` for every call answered, and
``figures(fid)`` for its call rate, p50/p99 latency and error rate.
"""

from __future__ import annotations

import bisect
import collections
import re
from typing import Any

import attrs

DIRECTIONS = ("in", "out")
MAX_MESSAGE_TYPES = 64  # distinct type names kept; the rest count as "other"
RATE_SAMPLE_INTERVAL_S = 10.0
RATE_WINDOW_S = 60.0
RATE_WINDOW_SAMPLES = 8  # enough samples to always have one about RATE_WINDOW_S old
RTT_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)
_TYPE_RE = re.compile(r"[A-Za-z0-9_]{1,32}\Z")

Key = tuple[str, str]


@attrs.define
class Stats:
    """Message and RTT statistics for one tracker process."""

    clock: Any
    started_at_s: float = attrs.field(init=False)
    _messages: dict[Key, int] = attrs.field(init=False, factory=dict)
    _bytes: dict[Key, int] = attrs.field(init=False, factory=dict)
    _samples: collections.deque = attrs.field(init=False)
    _rtt_buckets: list[int] = attrs.field(init=False)
    rtt_sum_ms: float = attrs.field(init=False, default=0.0)
    rtt_count: int = attrs.field(init=False, default=0)
    calls: "CallStats" = attrs.field(init=False)  # per-function call figures (the gateway and the router feed it)
    eth_signer: str | None = attrs.field(init=False, default=None)  # the payment signer's address (RFC 10.10)
    payments: Any = attrs.field(init=False, default=None)  # () -> what was counted, signed, refused (RFC 10.10)
    spot_checks: Any = attrs.field(init=False, default=None)  # () -> canary figures and suspects (orb.tracker.canary)

    def __attrs_post_init__(self) -> None:
        self.started_at_s = self.clock.seconds()
        self.calls = CallStats(self.clock)
        self._samples = collections.deque(maxlen=RATE_WINDOW_SAMPLES)
        self._samples.append((self.started_at_s, {}))
        self._rtt_buckets = [0] * (len(RTT_BUCKETS_MS) + 1)

    def _key(self, direction: str, type_name: str) -> Key:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        if not isinstance(type_name, str) or not _TYPE_RE.match(type_name):
            type_name = "unknown"
        key = (direction, type_name)
        if key not in self._messages and key not in self._bytes:
            if len(self._messages.keys() | self._bytes.keys()) >= MAX_MESSAGE_TYPES:
                key = (direction, "other")
        return key

    def count_message(self, direction: str, type_name: str) -> None:
        """One frame of ``type_name`` went ``direction`` ("in" or "out")."""
        key = self._key(direction, type_name)
        self._messages[key] = self._messages.get(key, 0) + 1
        self._maybe_sample()

    def count_bytes(self, direction: str, type_name: str, size_bytes: int) -> None:
        """``size_bytes`` of frames of ``type_name`` went ``direction``."""
        if type(size_bytes) is not int or size_bytes < 0:
            raise ValueError(f"size_bytes must be a non-negative integer, not {size_bytes!r}")
        key = self._key(direction, type_name)
        self._bytes[key] = self._bytes.get(key, 0) + size_bytes

    def observe_rtt_ms(self, rtt_ms: float) -> None:
        if not rtt_ms >= 0:  # also refuses NaN
            return
        self._rtt_buckets[bisect.bisect_left(RTT_BUCKETS_MS, rtt_ms)] += 1
        self.rtt_sum_ms += rtt_ms
        self.rtt_count += 1

    def uptime_s(self) -> float:
        return max(0.0, self.clock.seconds() - self.started_at_s)

    def _maybe_sample(self) -> None:
        now = self.clock.seconds()
        if now - self._samples[-1][0] >= RATE_SAMPLE_INTERVAL_S:
            self._samples.append((now, dict(self._messages)))

    def message_totals(self) -> dict[Key, int]:
        return dict(self._messages)

    def byte_totals(self) -> dict[Key, int]:
        return dict(self._bytes)

    def messages_by_direction(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {d: {} for d in DIRECTIONS}
        for (d, t), n in sorted(self._messages.items()):
            out[d][t] = n
        return out

    def rates_per_s(self) -> dict[str, dict[str, float]]:
        """Messages per second per direction and type, over the last
        minute (or since start, if younger)."""
        self._maybe_sample()
        now = self.clock.seconds()
        then, old = self._samples[-1]
        for t, counts in self._samples:
            if now - t <= RATE_WINDOW_S:
                then, old = t, counts
                break
        # A few messages in the first second are not "thousands per second".
        span = max(now - then, RATE_SAMPLE_INTERVAL_S) if self._messages else 0.0
        out: dict[str, dict[str, float]] = {d: {} for d in DIRECTIONS}
        for (d, t), n in sorted(self._messages.items()):
            out[d][t] = round((n - old.get((d, t), 0)) / span, 3) if span > 0 else 0.0
        return out

    def rtt_histogram(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound ms, count) pairs; the last bound is inf."""
        out = []
        total = 0
        for bound, n in zip((*RTT_BUCKETS_MS, float("inf")), self._rtt_buckets):
            total += n
            out.append((bound, total))
        return out


CALL_WINDOW_S = 60.0  # call rate, latency quantiles and error rate are over the last minute
MAX_CALLS_KEPT = 2048  # per function: the latest calls in the window (older ones drop first)
MAX_FUNCTIONS_TRACKED = 4096  # functions with figures; the least recently called is forgotten first
FIGURES_MEMO_S = 1.0  # a function's figures, unchanged by a call, are reused this long


@attrs.frozen
class CallFigures:
    """One function's calls over the last CALL_WINDOW_S, as the dashboard, the API and /metrics show them."""

    calls_total: int
    errors_total: int
    window_calls: int
    rate_per_s: float
    error_rate: float | None  # failed / all calls in the window; None without calls
    p50_ms: float | None
    p99_ms: float | None

    def to_json(self):
        return attrs.asdict(self)


def _quantile(sorted_values, q):
    """The nearest-rank ``q`` quantile of a sorted, non-empty list."""
    rank = max(1, -(-int(q * 1000) * len(sorted_values) // 1000))  # ceil(q * n), at least 1
    return sorted_values[min(rank, len(sorted_values)) - 1]


@attrs.define
class CallStats:
    """
    Per-function call figures, fed by whoever answers a call
    (``observe_call(fid, latency_s, ok)``) and read by the HTTP API,
    ``/metrics`` and the dashboard (``figures(fid)``). Bounded: at most
    ``MAX_CALLS_KEPT`` calls per function and ``MAX_FUNCTIONS_TRACKED``
    functions. Time from ``clock``.
    """

    clock: Any
    _calls: collections.OrderedDict = attrs.field(init=False, factory=collections.OrderedDict)
    _totals: dict = attrs.field(init=False, factory=dict)  # fid -> [calls, errors]
    _memo: dict = attrs.field(init=False, factory=dict)  # fid -> (computed at, CallFigures), for FIGURES_MEMO_S

    def observe_call(self, fid, latency_s, ok):
        """A call of ``fid`` ended after ``latency_s`` seconds; ``ok``: the function answered OK."""
        window = self._calls.get(fid)
        if window is None:
            if len(self._calls) >= MAX_FUNCTIONS_TRACKED:
                old, _ = self._calls.popitem(last=False)
                self._totals.pop(old, None)
                self._memo.pop(old, None)
            window = self._calls[fid] = collections.deque(maxlen=MAX_CALLS_KEPT)
            self._totals[fid] = [0, 0]
        self._calls.move_to_end(fid)
        self._memo.pop(fid, None)
        window.append((self.clock.seconds(), max(0.0, float(latency_s)) * 1000.0, bool(ok)))
        totals = self._totals[fid]
        totals[0] += 1
        totals[1] += 0 if ok else 1

    def fids(self):
        return list(self._calls)

    def figures(self, fid):
        """``fid``'s CallFigures; all zero or None for a function not called lately. Figures unchanged
        by a call are computed again at most every FIGURES_MEMO_S (the dashboard polls every function)."""
        now = self.clock.seconds()
        memo = self._memo.get(fid)
        if memo is not None and now - memo[0] < FIGURES_MEMO_S:
            return memo[1]
        window = self._calls.get(fid, ())
        calls, errors = self._totals.get(fid, (0, 0))
        recent = [(t, ms, ok) for t, ms, ok in window if now - t <= CALL_WINDOW_S]
        latencies = sorted(ms for _, ms, _ in recent)
        failed = sum(1 for _, _, ok in recent if not ok)
        figures = CallFigures(
            calls_total=calls, errors_total=errors, window_calls=len(recent),
            rate_per_s=round(len(recent) / CALL_WINDOW_S, 3),
            error_rate=round(failed / len(recent), 4) if recent else None,
            p50_ms=round(_quantile(latencies, 0.5), 3) if latencies else None,
            p99_ms=round(_quantile(latencies, 0.99), 3) if latencies else None,
        )
        if fid in self._calls:
            self._memo[fid] = (now, figures)
        return figures
