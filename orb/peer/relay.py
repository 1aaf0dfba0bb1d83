# -*- test-case-name: tests.test_relay -*-
"""
RELAY at a peer (RFC 10.3): calls that reach a peer through a tracker
session, typically because the peer accepts no connections (``relayed``).

A RELAY from a tracker session that negotiated the RELAY feature carries
one inner frame from the node named in ``target`` (the origin). The frame
is decoded strictly (orb.protocol.relay). An inner INVOKE or LOGS goes to
the peer's own handler for it, as if the origin had sent it on a session
of its own: the handler is given a ``RelayedRecord``, whose ``send``
wraps the answer in RELAY(target = the origin) back over the tracker
session the call came on. An inner CANCEL goes to the CANCEL handler the
same way and ends the request it names (a host sends no answer to a
cancelled call, and one it sends anyway is dropped here). When the
tracker session goes, the calls that came on it are withdrawn through the
CANCEL handler too: their answers could no longer be delivered.

Inner request ids are the origin's, end to end: at most
MAX_IN_FLIGHT_PER_ORIGIN of them unanswered per origin (over it: an inner
ERROR(rate_limited)), a repeated id is ERROR(unexpected), and a request
of a type not served through a relay is ERROR(unsupported). A bad inner
frame is dropped and costs the *origin* misbehaviour, not the tracker
that only carried it: an origin that reaches MISBEHAVIOUR_LIMIT is
ignored for DISCOURAGE_S. At most MAX_ORIGINS origins are remembered.
"""

import collections

from orb.net.logs import escape, orb_logger
from orb.net.sessions import DEFAULT_SCORE, DISCOURAGE_S, MISBEHAVIOUR_LIMIT, MISBEHAVIOUR_SCORES, violation
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Feature
from orb.protocol.messages import MessageType
from orb.protocol.relay import BadInnerFrame, decode_inner, encode_inner
from orb.protocol.session import REQUEST_TYPES

log = orb_logger()

RELAYED_REQUESTS = frozenset({MessageType.INVOKE, MessageType.LOGS})  # what a host serves through a relay
MAX_IN_FLIGHT_PER_ORIGIN = 64  # the same bound as a session's in-flight requests (RFC 6.7)
MAX_ORIGINS = 1024  # origins (tracker, node) with relayed state here
MAX_SCORED_ORIGINS = 10_000  # origins whose misbehaviour is remembered
MAX_ERROR_TEXT = 200


class _Remote:
    """What a handler may read of a relayed caller: its node id (as the tracker vouches for it)."""

    __slots__ = ("node_id",)
    roles = 0
    features = 0

    def __init__(self, node_id):
        self.node_id = node_id


class RelayedRecord:
    """A caller reached through RELAY, shaped like a SessionRecord for the handlers.

    One per (tracker session, origin), kept while it has requests in flight,
    so a CANCEL finds the same record as the INVOKE it withdraws."""

    inbound = True
    is_tracker = False
    relayed = True
    dial = None

    def __init__(self, relay, via, origin):
        self._relay = relay
        self.via = via  # the tracker's SessionRecord
        self.remote = _Remote(origin)
        self.in_flight = set()  # the origin's inner request ids not yet answered

    @property
    def node_id(self):
        return self.remote.node_id

    @property
    def name(self):
        return self.node_id.hex()[:16] + " (relayed)"

    @property
    def ready(self):
        return self.via.ready

    @property
    def rtt_ms(self):
        return self.via.rtt_ms

    def send(self, message, response_to=0):
        """Answer the origin through the relay; an answer to a request no longer in flight is dropped."""
        if response_to:
            if response_to not in self.in_flight:
                return
            self.in_flight.discard(response_to)
        frame = encode_inner(self._relay.magic, message, response_to, response=bool(response_to))
        self.via.send(m.Relay(target=self.node_id, frame=frame))

    def refuse(self, request_id, code, text):
        if request_id:
            self.send(m.Error(code=int(code), ref_request_id=request_id, text=text[:MAX_ERROR_TEXT]),
                      response_to=request_id)

    def request(self, message, timeout_s=30.0):
        raise NotImplementedError("a host does not send requests through a relay")

    def close(self, text, code=ErrorCode.SHUTDOWN):
        pass  # there is no session of its own to close


class RelayedCalls:
    """The RELAY handler of a peer; it dispatches inner frames through ``table.handlers``."""

    def __init__(self, clock, local, table):
        self.clock = clock
        self.local = local
        self.table = table
        config = local.session_config
        self.magic = config.magic
        self.max_frame_bytes = config.max_frame_bytes
        self._records = collections.OrderedDict()  # (tracker id, origin) -> RelayedRecord
        self._scores = collections.OrderedDict()  # origin -> misbehaviour score
        self._ignored = collections.OrderedDict()  # origin -> until (seconds)
        self.dropped = 0  # inner frames dropped, for tests and status

    def handlers(self):
        return {MessageType.RELAY: self.on_relay}

    def on_relay(self, record, message, request_id):
        if not record.is_tracker or not record.remote.features & Feature.RELAY:
            record.send(m.Error(code=int(ErrorCode.UNSUPPORTED), ref_request_id=0,
                                text="this peer takes RELAY only from a tracker that negotiated it"))
            self.table.misbehaved(record.protocol, violation("RELAY from a non-relay", ErrorCode.UNSUPPORTED, False))
            return
        origin = message.target
        if self._is_ignored(origin):
            self.dropped += 1
            return
        try:
            frame = decode_inner(message.frame, self.magic, self.max_frame_bytes)
        except BadInnerFrame as e:
            self._bad(origin, e.code, e.message)
            return
        inner = frame.message
        if frame.is_response or isinstance(inner, m.Error):
            self._bad(origin, ErrorCode.UNEXPECTED, f"relayed {inner.TYPE.name} answers nothing of ours")
            return
        if inner.TYPE == MessageType.CANCEL:
            self._cancel(record, origin, inner)
            return
        if inner.TYPE not in REQUEST_TYPES:
            self._bad(origin, ErrorCode.UNSUPPORTED, f"{inner.TYPE.name} is not served through a relay")
            return
        if not frame.request_id:
            self._bad(origin, ErrorCode.UNEXPECTED, f"relayed {inner.TYPE.name} without a request id")
            return
        caller = self._record(record, origin)
        if caller is None:
            self._answer_error(record, origin, frame.request_id, ErrorCode.BUSY, "too many relayed callers")
            return
        handler = self.table.handlers.get(inner.TYPE) if inner.TYPE in RELAYED_REQUESTS else None
        if handler is None:
            self._answer_error(record, origin, frame.request_id, ErrorCode.UNSUPPORTED,
                               f"{inner.TYPE.name} is not served through a relay here")
            return
        if frame.request_id in caller.in_flight:
            self._answer_error(record, origin, frame.request_id, ErrorCode.UNEXPECTED,
                               f"request id {frame.request_id} is already in use")
            return
        if len(caller.in_flight) >= MAX_IN_FLIGHT_PER_ORIGIN:
            self._answer_error(record, origin, frame.request_id, ErrorCode.RATE_LIMITED,
                               f"more than {MAX_IN_FLIGHT_PER_ORIGIN} relayed requests in flight")
            return
        caller.in_flight.add(frame.request_id)
        try:
            handler(caller, inner, frame.request_id)
        except Exception:
            log.failure("handling relayed {type} from {peer}", type=inner.TYPE.name, peer=caller.name)
            caller.refuse(frame.request_id, ErrorCode.INTERNAL, "internal error")

    def session_lost(self, record):
        """The tracker session is gone: its relayed callers can no longer be answered, so their calls
        are withdrawn through the CANCEL handler, as a lost session's own calls are (RFC 10.5)."""
        for key in [k for k, caller in self._records.items() if caller.via is record]:
            caller = self._records.pop(key)
            for request_id in sorted(caller.in_flight):
                self._withdraw(caller, request_id)

    # --- internals -------------------------------------------------------------------------

    def _cancel(self, record, origin, cancel):
        caller = self._records.get((record.node_id, origin))
        if caller is None or cancel.request_id not in caller.in_flight:
            return  # answered already, or never asked: nothing to withdraw
        self._withdraw(caller, cancel.request_id)

    def _withdraw(self, caller, request_id):
        """Hand CANCEL(request_id) to the host's handler; whatever the host still sends for it is dropped."""
        handler = self.table.handlers.get(MessageType.CANCEL)
        if handler is not None:
            try:
                handler(caller, m.Cancel(request_id=request_id), 0)
            except Exception:
                log.failure("handling relayed CANCEL from {peer}", peer=caller.name)
        caller.in_flight.discard(request_id)

    def _record(self, via, origin):
        key = (via.node_id, origin)
        caller = self._records.get(key)
        if caller is not None:
            self._records.move_to_end(key)
            return caller
        if len(self._records) >= MAX_ORIGINS:
            idle = next((k for k, c in self._records.items() if not c.in_flight), None)
            if idle is None:
                return None
            del self._records[idle]
        caller = self._records[key] = RelayedRecord(self, via, origin)
        return caller

    def _answer_error(self, via, origin, request_id, code, text):
        error = m.Error(code=int(code), ref_request_id=request_id, text=text[:MAX_ERROR_TEXT])
        via.send(m.Relay(target=origin, frame=encode_inner(self.magic, error, request_id, response=True)))

    def _is_ignored(self, origin):
        until = self._ignored.get(origin)
        if until is None:
            return False
        if until > self.clock.seconds():
            return True
        del self._ignored[origin]
        return False

    def _bad(self, origin, code, text):
        """Drop a bad inner frame; its origin, not the tracker that carried it, pays."""
        self.dropped += 1
        score = self._scores.pop(origin, 0) + MISBEHAVIOUR_SCORES.get(code, DEFAULT_SCORE)
        log.debug("dropping a relayed frame from {origin}: {why}", origin=origin.hex()[:16], why=escape(text, 120))
        if score < MISBEHAVIOUR_LIMIT:
            self._scores[origin] = score
            while len(self._scores) > MAX_SCORED_ORIGINS:
                self._scores.popitem(last=False)
            return
        log.info("ignoring relayed frames from {origin} for misbehaviour", origin=origin.hex()[:16])
        self._ignored[origin] = self.clock.seconds() + DISCOURAGE_S
        while len(self._ignored) > MAX_SCORED_ORIGINS:
            self._ignored.popitem(last=False)
