# -*- test-case-name: tests.test_limits -*-
"""
Token buckets keyed by who asks (a node id, an IP address, "all"), with a
bound on how many keys are remembered. Every rate a remote can push on is
limited through one of these: dial-backs, SYNC, log lines.
"""

import collections


class TokenBuckets:
    """``allow(key)``: take one token from ``key``'s bucket if it has one.

    Each bucket holds at most ``burst`` tokens and refills at ``rate_per_s``.
    At most ``max_keys`` buckets are remembered; the least recently used is
    forgotten first (a forgotten key starts again with a full bucket, so the
    bound on keys must be well above the number of honest askers)."""

    def __init__(self, clock, rate_per_s, burst, max_keys=10_000):
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a token bucket needs a positive rate, a burst of at least 1 and room for a key")
        self.clock = clock
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets = collections.OrderedDict()  # key -> (tokens, when)

    def __len__(self):
        return len(self._buckets)

    def allow(self, key, cost=1.0):
        now = self.clock.seconds()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.rate_per_s)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
