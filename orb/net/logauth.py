# -*- test-case-name: tests.test_logs -*-
"""
Who may read a function's call logs (RFC 10.7): the checks a host and a
tracker both make on an owner-signed LOGS, in one place.

- ``check_logs(message, owner_key, now_s)``: the request names the
  function's owner key, its signature by that key verifies, and it was
  issued within WINDOW_S of this node's clock. None, or the Refusal.
- ``ReplayCache``: a nonce is taken once within the window. It holds at
  most ``max_nonces``; when full it forgets the oldest and from then on
  refuses anything issued no later than what it forgot, so a replay never
  slips through an eviction.

Nothing here logs: the signature, the nonce and the logs themselves are
for the owner only.
"""

import heapq

import attrs

from orb.identity import verify_signature
from orb.protocol.codes import ErrorCode

WINDOW_S = 120  # issued_at may be this far from the receiver's clock, either way
MAX_REPLAY_NONCES = 4096


@attrs.frozen
class Refusal:
    """Why a LOGS request is refused: the ERROR code and its text."""

    code: ErrorCode
    text: str


def check_logs(message, owner_key, now_s, window_s=WINDOW_S):
    """None if ``message`` (a Logs) is the owner's fresh signed request, else the Refusal.
    ``owner_key`` is the owner key this node knows for the fid (None: it knows none)."""
    if owner_key is None:
        return Refusal(ErrorCode.DENIED, "no owner key is known here for this function")
    if message.owner_key != owner_key:
        return Refusal(ErrorCode.DENIED, "owner_key is not the function's owner key")
    if not verify_signature(owner_key, message.signature, message.signed_bytes()):
        return Refusal(ErrorCode.DENIED, "the signature is not owner_key's signature of this request")
    skew = message.issued_at - now_s
    if abs(skew) > window_s:
        return Refusal(ErrorCode.OUT_OF_RANGE, f"issued_at is {skew:+.0f} s from this node's clock; "
                                               f"at most {window_s} s either way is accepted: check the clock")
    return None


class ReplayCache:
    """The (owner key, nonce) pairs of the requests taken within the window; see the module docstring."""

    def __init__(self, clock, window_s=WINDOW_S, max_nonces=MAX_REPLAY_NONCES):
        self.clock = clock
        self.window_s = window_s
        self.max_nonces = max_nonces
        self._heap = []  # (issued_at, key): the oldest first
        self._seen = set()
        self._floor = -1  # requests issued at or before this are refused: their nonces may have been forgotten

    def __len__(self):
        return len(self._seen)

    def admit(self, owner_key, nonce, issued_at):
        """Record the request's nonce: None the first time, a Refusal for a replay."""
        self._expire()
        key = (owner_key, nonce)
        if key in self._seen:
            return Refusal(ErrorCode.DENIED, "this request was already answered (its nonce is spent): sign a new one")
        if issued_at <= self._floor:
            return Refusal(ErrorCode.OUT_OF_RANGE, "issued_at is older than this node's replay cache reaches: "
                                                   "sign a new request")
        if issued_at < self.clock.seconds() - self.window_s:
            return Refusal(ErrorCode.OUT_OF_RANGE, "issued_at is outside the replay window: sign a new request")
        while len(self._seen) >= self.max_nonces:
            old_at, old = heapq.heappop(self._heap)
            self._seen.discard(old)
            self._floor = max(self._floor, old_at)
            if issued_at <= self._floor:
                return Refusal(ErrorCode.OUT_OF_RANGE, "issued_at is older than this node's replay cache reaches: "
                                                       "sign a new request")
        heapq.heappush(self._heap, (issued_at, key))
        self._seen.add(key)
        return None

    def _expire(self):
        oldest = self.clock.seconds() - self.window_s
        while self._heap and self._heap[0][0] < oldest:
            _, key = heapq.heappop(self._heap)
            self._seen.discard(key)
