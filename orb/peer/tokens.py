# -*- test-case-name: tests.test_tokens_host -*-
"""
Capability tokens at a host (RFC 9.11): the check on every INVOKE of a
private function, and the revocations its trackers push.

- ``check(fid_raw, token, caller_key, now)`` raises ``TokenError``. The
  owner is the one the OFFER named (``PackageStore.owner``); a host that
  does not know it refuses (``token_forged``). Hosts resolve no names: a
  name scope covers any function of the owner whose label it carries, when
  the chain's root is that owner (RFC 9.11).
- ``caller_for(record, message)``: the key a call is bound to. A call a
  tracker sent (a tracker session, or a RELAY the tracker itself
  originated) is bound to its ``caller`` TLV; a direct call to the
  session's key; any other relayed call to no key (only a bearer token
  works there).
- REVOKE from a tracker session: verified, kept in memory and in the
  package store's SQLite (``revocations``), answered STATEMENT_ACK; from
  any other session ERROR(denied). At most MAX_REVOCATIONS are kept (the
  soonest-expiring go first); each is forgotten past its ``not_after``.
"""

import heapq

from twisted.internet import defer

from orb.net.logs import orb_logger
from orb.protocol import messages as m
from orb.protocol import token as tokenmod
from orb.protocol.codes import ErrorCode
from orb.protocol.federation import BadSignature, Revocation
from orb.protocol.messages import MessageType, caller_of
from orb.protocol.token import TokenError

log = orb_logger()

MAX_REVOCATIONS = 100_000


class HostTokens:
    """Token checks and revocations at a host; ``packages`` is the PackageStore (owners, the SQLite table)."""

    def __init__(self, clock, packages, max_revocations=MAX_REVOCATIONS):
        self.clock = clock
        self.packages = packages
        self.max_revocations = max_revocations
        self._revoked = {}  # (token_id, issuer) -> not_after
        self._by_expiry = []  # heap of (not_after, token_id, issuer)

    def handlers(self):
        return {MessageType.REVOKE: self.on_revoke}

    @defer.inlineCallbacks
    def load(self):
        """Read the kept revocations (past ones purged)."""
        now = int(self.clock.seconds())
        yield self.packages.purge_revocations(now)
        for token_id, issuer, not_after, _sig in (yield self.packages.revocations()):
            self._keep(token_id, issuer, not_after)

    def __len__(self):
        return len(self._revoked)

    # --- checks -----------------------------------------------------------------------------------

    def revoked(self, link_id, issuer):
        not_after = self._revoked.get((link_id, issuer))
        return not_after is not None and not_after >= self.clock.seconds()

    def check(self, fid_raw, token, caller_key, now=None):
        now = int(self.clock.seconds() if now is None else now)
        owner = self.packages.owner(fid_raw)
        if owner is None:
            if not token:
                raise TokenError(tokenmod.REQUIRED, "this function is private: send a capability token")
            raise TokenError(tokenmod.FORGED, "this host does not know the function's owner")
        return tokenmod.check(token, fid_raw, owner, caller_key, now, revoked=self.revoked, name_fids=None)

    @staticmethod
    def caller_for(record, message):
        if record.is_tracker:
            return caller_of(message) or record.remote.public_key
        via = getattr(record, "via", None)
        if via is not None:  # relayed: the tracker that carries it vouches for its own calls only
            return caller_of(message) if via.is_tracker and record.node_id == via.node_id else None
        return record.remote.public_key

    # --- REVOKE -----------------------------------------------------------------------------------

    def on_revoke(self, record, message, request_id):
        if not record.is_tracker:
            record.refuse(request_id, ErrorCode.DENIED, "hosts take revocations from their trackers")
            return
        status, text = self.take(message)
        if request_id:
            record.send(m.StatementAck(status=int(status), seq=0, text=text), response_to=request_id)

    def take(self, message):
        revocation = Revocation(message.issuer_key, message.token_id, message.not_after, message.signature)
        try:
            revocation.verify()
        except BadSignature:
            return ErrorCode.DENIED, "the signature is not the issuer key's"
        now = self.clock.seconds()
        if message.not_after < now:
            return 0, "expired already"
        key = (message.token_id, message.issuer_key)
        if self._revoked.get(key, -1) >= message.not_after:
            return 0, "held"
        self._keep(message.token_id, message.issuer_key, message.not_after)
        d = self.packages.add_revocation(message.token_id, message.issuer_key, message.not_after, message.signature)
        if len(self._revoked) >= self.max_revocations:
            d.addCallback(lambda _: self.packages.purge_revocations(now, keep=self.max_revocations))
        d.addErrback(lambda f: log.failure("keeping a revocation", f))
        return 0, "revoked"

    def _keep(self, token_id, issuer, not_after):
        now = self.clock.seconds()
        while self._by_expiry and (self._by_expiry[0][0] < now or len(self._revoked) >= self.max_revocations):
            old_after, old_id, old_issuer = heapq.heappop(self._by_expiry)
            if self._revoked.get((old_id, old_issuer)) == old_after:
                del self._revoked[(old_id, old_issuer)]
        self._revoked[(token_id, issuer)] = max(not_after, self._revoked.get((token_id, issuer), 0))
        heapq.heappush(self._by_expiry, (not_after, token_id, issuer))
