# -*- test-case-name: tests.test_tokens_tracker -*-
"""
Capability tokens at a tracker (RFC 9.11, 5.30): the check before a private
function's call is routed, REVOKE from issuers, and revocations pushed to hosts.

- ``check(fid_text, token, caller_key, now)`` raises ``TokenError`` (``code``
  "missing" or "denied", ``reason`` one of ``orb.protocol.token.REASONS``).
  The owner is the function record's; revocations are the registry's
  ``revocation`` records; a name scope is resolved through ``names`` (the
  tracker's NAME core) when there is one, else (no name resolution) an
  owner's own name scope covers the owner's functions.
- ``on_revoke``: a REVOKE whose signature verifies becomes a ``revocation``
  registry record (federated like every kind) and is answered
  STATEMENT_ACK 0; a bad signature ``denied``; one already past its
  ``not_after`` ``invalid``; a full registry ``busy``.
- Every revocation the registry takes in (ours or a federated one) is sent
  as REVOKE to each connected host; a host whose session becomes ready gets
  the live ones (at most JOIN_PUSH_MAX, latest expiry first), PUSH_WINDOW
  requests at a time.
"""

import collections

from orb.net.logs import orb_logger
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import token as tokenmod
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.federation import REVOCATION, BadSignature, Revocation, revocation_ident
from orb.protocol.messages import MessageType
from orb.protocol.token import TokenError
from orb.tracker.registry import RegistryChangeError, RegistryFull

log = orb_logger()

JOIN_PUSH_MAX = 10_000  # revocations sent to a host when its session becomes ready
PUSH_WINDOW = 16  # REVOKE requests in flight to one host
MAX_PUSH_QUEUE = 100_000  # revocations waiting to go out to one host; past it the oldest are dropped
PUSH_TIMEOUT_S = 30.0


class Tokens:
    """The tracker's token checks and revocations. ``names``: the NAME core (``resolve``), or None."""

    def __init__(self, clock, registry, table=None, names=None, names_of=None):
        self.clock = clock
        self.registry = registry
        self.table = table
        self._names = names
        self._names_of = names_of  # or a callable giving the NAME core, for a core wired after this one
        self.counts = collections.Counter()
        self._queues = {}  # session record -> deque of Revoke
        self._sending = collections.Counter()  # session record -> requests in flight
        if table is not None:
            registry.watch(self._changed)

    def handlers(self):
        return {MessageType.REVOKE: self.on_revoke}

    # --- checks -----------------------------------------------------------------------------------

    def revoked(self, link_id, issuer):
        return self.registry.record(REVOCATION.name, revocation_ident(link_id, issuer)) is not None

    @property
    def names(self):
        return self._names if self._names is not None or self._names_of is None else self._names_of()

    def name_fids(self, scope_text):
        """Every fid the name ``name.owner_label`` has pointed at, or None without a NAME core."""
        names = self.names
        if names is None:
            return None
        name, _, label = scope_text.rpartition(".")
        view = names.resolve(label, name)
        if view is None:
            return ()
        fids = []
        for entry in view.history:
            try:
                fids.append(fidmod.from_text(entry[1]))
            except fidmod.FidError:
                continue
        return fids

    def check(self, fid_text, token, caller_key, now=None):
        """Raise TokenError unless ``token`` lets ``caller_key`` call private function ``fid_text``."""
        now = int(self.clock.seconds() if now is None else now)
        function = self.registry.function(fid_text)
        if function is None:
            raise TokenError(tokenmod.SCOPE, f"no function {fid_text} is deployed")
        self.counts["checks"] += 1
        try:
            return tokenmod.check(token, fidmod.from_text(fid_text), function.owner, caller_key, now,
                                  revoked=self.revoked, name_fids=self.name_fids)
        except TokenError as e:
            self.counts[e.reason] += 1
            raise

    # --- REVOKE -----------------------------------------------------------------------------------

    def on_revoke(self, record, message, request_id):
        status, text = self.revoke(message)
        if request_id:
            record.send(m.StatementAck(status=int(status), seq=0, text=text), response_to=request_id)

    def revoke(self, message):
        """Take in a REVOKE: (ErrorCode or 0, text)."""
        revocation = Revocation(message.issuer_key, message.token_id, message.not_after, message.signature)
        try:
            revocation.verify()
        except BadSignature:
            return ErrorCode.DENIED, "the signature is not the issuer key's"
        if message.not_after < self.clock.seconds():
            return ErrorCode.INVALID, "the token has expired already: nothing to revoke"
        try:
            self.registry.accept(revocation)
        except RegistryFull as e:
            return ErrorCode.BUSY, str(e)
        except (RegistryChangeError, BadSignature) as e:
            return ErrorCode.INVALID, str(e)[:200]
        self.counts["revocations"] += 1
        log.info("revocation of token {token_id} by {issuer}", token_id=message.token_id.hex(),
                 issuer=message.issuer_key.hex()[:16])
        return 0, "revoked"

    # --- pushes to hosts ------------------------------------------------------------------------------

    def _hosts(self):
        return [r for r in self.table.records() if r.ready and _is_host(r)]

    def _changed(self, change):
        if change.spec.name != REVOCATION.name:
            return
        message = _revoke_of(change.record)
        self.clock.callLater(0, self._push_all, message)  # watchers never call back in

    def _push_all(self, message):
        for record in self._hosts():
            self._enqueue(record, [message])

    def session_ready(self, record):
        """A host's session is up: send it the live revocations."""
        if not _is_host(record):
            return
        live = sorted(self.registry.records(REVOCATION.name), key=lambda r: r.not_after, reverse=True)
        if live:
            self._enqueue(record, [_revoke_of(r) for r in live[:JOIN_PUSH_MAX]])

    def session_lost(self, record):
        self._queues.pop(record, None)
        self._sending.pop(record, None)

    def _enqueue(self, record, messages):
        queue = self._queues.setdefault(record, collections.deque(maxlen=MAX_PUSH_QUEUE))
        queue.extend(messages)
        self._pump(record)

    def _pump(self, record):
        queue = self._queues.get(record)
        while queue and self._sending[record] < PUSH_WINDOW and record.ready:
            message = queue.popleft()
            self._sending[record] += 1
            try:
                d = record.request(message, timeout_s=PUSH_TIMEOUT_S)
            except Exception as e:  # the session is closing, or has too many requests out
                self._sending[record] -= 1
                log.info("revocation push to {peer} failed: {why}", peer=record.name, why=str(e)[:100])
                return
            d.addBoth(self._pushed, record)
        if queue is not None and not queue:
            self._queues.pop(record, None)

    def _pushed(self, outcome, record):
        if record in self._sending:
            self._sending[record] -= 1
        self.counts["pushed"] += 1
        if record in self._queues:
            self._pump(record)
        return None


def _is_host(record):
    """A peer (it hosts functions), not a tracker (federation carries revocations) or a client."""
    roles = record.remote.roles
    return bool(roles & Role.PEER) and not roles & Role.TRACKER


def _revoke_of(revocation):
    return m.Revoke(issuer_key=revocation.issuer, token_id=revocation.token_id, not_after=revocation.not_after,
                    signature=revocation.sig)

