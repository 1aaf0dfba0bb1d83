# -*- test-case-name: tests.test_relay -*-
"""
RELAY at a tracker (RFC 10.3): forwarding frames to and from peers that
accept no connections, and this tracker's own calls to peers it reaches
only through their home tracker.

Forwarding. A RELAY from a session that negotiated the RELAY feature is
checked (orb.protocol.relay: magic, exact length, frame limit, never
HELLO, HELLO_ACK or RELAY inside), then sent on as RELAY(target = the
sender's node id, frame unchanged) to the session of the node it names.
A tracker is reached through a relay only by a peer's answer to a call
the tracker made itself, and what came from a tracker goes on only to a
peer, so a frame crosses at most two trackers and can never loop. A RELAY that cannot be delivered
(no live session with the target, over a bound) is refused: an inner
request is answered inside the relay, RELAY(target, ERROR frame answering
the inner request id), so that the caller's own request ends at once; an
inner notification or answer gets an outer ERROR notification. A frame
that fails the checks gets an outer ERROR(malformed, frame_too_large or
unexpected) notification and costs the sender misbehaviour.

Bounds, per sending session: RELAY_FRAMES_PER_S frames and
RELAY_BYTES_PER_S inner bytes a second (token buckets), at most
MAX_RELAYED_IN_FLIGHT inner requests forwarded and not yet answered (an
answer or a CANCEL ends one; so does RELAYED_REQUEST_TTL_S), and nothing
forwarded to a target that has stopped reading (its output is paused).
Over any of them: ``rate_limited``.

This tracker's own calls. ``channel(node_id)`` is how the router reaches a
replica: the ready session with it (``Direct``, route "direct"), or, for a
peer homed on another tracker that this tracker federates with, a
``RelayChannel`` (route "relay") whose requests travel as RELAY over the
federation session to that home tracker. The home is the tracker that
signed the peer's registry Observation. Inner request ids are this
tracker's own, end to end; a RELAY from a tracker carrying a response or
ERROR is an answer to one of them (matched by the session it came on, the
peer and the id), and is dropped if it matches none.
"""

import collections

import attrs
from twisted.internet import defer, error

from orb.net.adapter import RemoteError, RequestTimeout
from orb.net.limits import TokenBuckets
from orb.net.logs import orb_logger
from orb.net.sessions import violation
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Feature, Role
from orb.protocol.frame import DEFAULT_MAX_FRAME_BYTES
from orb.protocol.messages import MessageType
from orb.protocol.relay import BadInnerFrame, decode_inner, encode_inner, inner_header
from orb.protocol.session import MAX_REQUEST_ID, RESPONSES

log = orb_logger()

RELAY_FRAMES_PER_S = 200.0  # relayed frames a session may send a second ...
RELAY_FRAMES_BURST = 400  # ... after a burst of this many
RELAY_BYTES_PER_S = 8 * 1024 * 1024  # inner frame bytes a second ...
RELAY_BYTES_BURST = 2 * (DEFAULT_MAX_FRAME_BYTES + 64)  # ... after a burst of two largest frames
MAX_RELAYED_IN_FLIGHT = 64  # inner requests one session has relayed and not seen answered
RELAYED_REQUEST_TTL_S = 330.0  # an inner request unanswered this long stops counting (MAX_DEADLINE_S + margin)
MAX_OWN_RELAYED = 4096  # this tracker's own relayed requests outstanding, in all ...
MAX_OWN_RELAYED_PER_PEER = 64  # ... and to one peer (a host serves that many from one origin)
MAX_ERROR_TEXT = 200


@attrs.frozen
class Direct:
    """A replica this tracker has a ready session with: requests go on that session."""

    record: object
    route = "direct"

    @property
    def node_id(self):
        return self.record.node_id

    def request(self, message, timeout_s=30.0):
        return self.record.request(message, timeout_s=timeout_s)


@attrs.frozen
class RelayChannel:
    """A peer reached through RELAY over the federation session ``via`` with its home tracker."""

    relayer: object = attrs.field(repr=False)
    via: object
    node_id: bytes
    route = "relay"

    def request(self, message, timeout_s=30.0):
        """Deferred[the answer]; fails with ConnectionLost, RequestTimeout or RemoteError, as a session's would."""
        return self.relayer.request(self.via, self.node_id, message, timeout_s)


@attrs.define(eq=False)
class _Own:
    """One of this tracker's relayed requests, waiting for its answer."""

    via: object
    target: bytes
    request_id: int
    message_type: MessageType
    deferred: defer.Deferred
    timeout: object = None


class Relayer:
    def __init__(self, clock, local, table, registry, *, admits=lambda record: True):
        self.clock = clock
        self.local = local
        self.table = table
        self.registry = registry
        self.admits = admits  # whether a tracker session is one we federate with
        config = local.session_config
        self.magic = config.magic
        self.max_frame_bytes = config.max_frame_bytes
        self._frames = TokenBuckets(clock, RELAY_FRAMES_PER_S, RELAY_FRAMES_BURST)
        self._bytes = TokenBuckets(clock, RELAY_BYTES_PER_S, RELAY_BYTES_BURST)
        self._in_flight = {}  # sender node id -> OrderedDict((target, inner id) -> when forwarded)
        self._own = {}  # (via node id, target, inner id) -> _Own
        self._own_per_peer = collections.Counter()
        self._next_id = 1 + int.from_bytes(local.node_id[:4], "big") % (MAX_REQUEST_ID - 1)
        self.forwarded = 0  # frames relayed, for tests and operators
        self.refused = collections.Counter()  # ErrorCode -> RELAYs refused

    def handlers(self):
        return {MessageType.RELAY: self.on_relay}

    # --- this tracker's own calls --------------------------------------------------------

    def channel(self, node_id):
        """How to reach replica ``node_id``: Direct, a RelayChannel through its home tracker, or None."""
        record = self.table.get(node_id)
        if record is not None and record.ready:
            return Direct(record)
        peer = self.registry.peer(node_id)
        if peer is None or not peer.connected:
            return None
        home = peer.observation.tracker  # who signed the observation: the tracker the peer is homed on
        if home == self.local.node_id or home != peer.home:
            return None
        via = self.table.get(home)
        if via is None or not self._relays_for_us(via):
            return None
        return RelayChannel(self, via, node_id)

    def _relays_for_us(self, via):
        remote = via.remote
        return (via.ready and via.is_tracker and bool(remote.roles & Role.RELAY)
                and bool(remote.features & Feature.RELAY) and self.admits(via))

    def request(self, via, target, message, timeout_s=30.0):
        if not via.ready:
            return defer.fail(error.ConnectionLost("the home tracker's session is not ready"))
        if len(self._own) >= MAX_OWN_RELAYED or self._own_per_peer[target] >= MAX_OWN_RELAYED_PER_PEER:
            return defer.fail(RemoteError(int(ErrorCode.BUSY), "too many relayed requests in flight"))
        request_id = self._allocate(via.node_id, target)
        key = (via.node_id, target, request_id)
        own = _Own(via, target, request_id, message.TYPE, defer.Deferred(lambda _: self._withdraw(key)))
        own.timeout = self.clock.callLater(timeout_s, self._timed_out, key, timeout_s)
        self._own[key] = own
        self._own_per_peer[target] += 1
        via.send(m.Relay(target=target, frame=encode_inner(self.magic, message, request_id)))
        return own.deferred

    def _allocate(self, via_id, target):
        while True:
            request_id = self._next_id
            self._next_id = request_id % MAX_REQUEST_ID + 1
            if (via_id, target, request_id) not in self._own:
                return request_id

    def _end(self, key):
        own = self._own.pop(key, None)
        if own is None:
            return None
        self._own_per_peer[own.target] -= 1
        if self._own_per_peer[own.target] <= 0:
            del self._own_per_peer[own.target]
        if own.timeout is not None and own.timeout.active():
            own.timeout.cancel()
        return own

    def _cancel_at_host(self, own):
        """The call is no use to anyone now: CANCEL through the relay, so the host kills it (RFC 10.5)."""
        if own.message_type == MessageType.INVOKE:
            own.via.send(m.Relay(target=own.target,
                                 frame=encode_inner(self.magic, m.Cancel(request_id=own.request_id))))

    def _withdraw(self, key):
        own = self._end(key)
        if own is not None:
            self._cancel_at_host(own)

    def _timed_out(self, key, timeout_s):
        own = self._end(key)
        if own is None:
            return
        self._cancel_at_host(own)
        own.deferred.errback(RequestTimeout(f"no relayed answer to request {key[2]} within {timeout_s:g} s"))

    def _answer(self, record, target, header, frame):
        """A RELAY from a tracker carrying an answer: settle our own request, or drop it."""
        key = (record.node_id, target, header.request_id)
        own = self._end(key)
        if own is None:
            return  # a late answer, or one to nothing of ours: answers from a tracker are never forwarded
        try:
            answer = decode_inner(frame, self.magic, self.max_frame_bytes).message
        except BadInnerFrame as e:
            own.deferred.errback(RemoteError(int(e.code), f"the relayed answer is not a valid frame: {e.message}"))
            return
        if isinstance(answer, m.Error):
            own.deferred.errback(RemoteError(answer.code, answer.text))
        elif answer.TYPE != RESPONSES.get(own.message_type):
            own.deferred.errback(RemoteError(int(ErrorCode.UNEXPECTED),
                                             f"{answer.TYPE.name} does not answer {own.message_type.name}"))
        else:
            own.deferred.callback(answer)

    def session_lost(self, record):
        self._in_flight.pop(record.node_id, None)
        for key in [k for k, own in self._own.items() if own.via is record]:
            own = self._end(key)
            own.deferred.errback(error.ConnectionLost("the session with the home tracker closed"))

    # --- forwarding ----------------------------------------------------------------------

    def on_relay(self, record, message, request_id):
        if not record.remote.features & Feature.RELAY:
            self._refuse(record, ErrorCode.UNSUPPORTED, "RELAY was not negotiated on this session", score=True)
            return
        frame = message.frame
        try:
            header = inner_header(frame, self.magic, self.max_frame_bytes)
        except BadInnerFrame as e:
            self._refuse(record, e.code, e.message, score=True)
            return
        if record.is_tracker and header.is_answer:
            self._answer(record, message.target, header, frame)
            return
        target = self.table.get(message.target)
        if target is None or not target.ready or not target.remote.features & Feature.RELAY:
            self._undeliverable(record, message.target, header, ErrorCode.NOT_FOUND,
                                "no session here with the RELAY target")
            return
        if target is record:
            self._refuse(record, ErrorCode.UNEXPECTED, "a RELAY to its own sender", score=True)
            return
        if target.is_tracker and (record.is_tracker or not header.is_answer):
            # A tracker is only ever the end of a relayed call it made: what reaches it is its answer.
            self._undeliverable(record, message.target, header, ErrorCode.NOT_FOUND,
                                "RELAY reaches a tracker only as a peer's answer to the tracker's own call")
            return
        why = self._over_bounds(record, target, header, frame)
        if why is not None:
            self._undeliverable(record, message.target, header, ErrorCode.RATE_LIMITED, why)
            return
        self.forwarded += 1
        target.send(m.Relay(target=record.node_id, frame=frame))

    def _over_bounds(self, record, target, header, frame):
        """Why this RELAY may not be forwarded now (None: it may); counts it when it may."""
        if target.protocol.output_paused:
            return "the RELAY target is not reading"
        in_flight = self._in_flight.get(record.node_id)
        if in_flight is None:
            in_flight = self._in_flight[record.node_id] = collections.OrderedDict()
        now = self.clock.seconds()
        while in_flight and next(iter(in_flight.values())) <= now - RELAYED_REQUEST_TTL_S:
            in_flight.popitem(last=False)
        asks = header.is_request and header.type in RESPONSES
        if asks and len(in_flight) >= MAX_RELAYED_IN_FLIGHT:
            return f"over {MAX_RELAYED_IN_FLIGHT} relayed requests in flight from this session"
        if not self._frames.allow(record.node_id):
            return f"over {RELAY_FRAMES_PER_S:g} relayed frames a second from this session"
        if not self._bytes.allow(record.node_id, cost=len(frame)):
            return f"over {RELAY_BYTES_PER_S} relayed bytes a second from this session"
        if asks:
            in_flight[(target.node_id, header.request_id)] = now
        elif header.is_answer:
            # An answer from ``record`` to ``target`` ends the request ``target`` relayed to it.
            answered = self._in_flight.get(target.node_id)
            if answered is not None:
                answered.pop((record.node_id, header.request_id), None)
        elif header.type == MessageType.CANCEL:
            self._cancelled(record, target, frame)
        return None

    def _cancelled(self, record, target, frame):
        """A relayed CANCEL ends the request it names: no answer will come."""
        try:
            cancel = decode_inner(frame, self.magic, self.max_frame_bytes).message
        except BadInnerFrame:
            return  # the target will see that for itself; it is still forwarded
        self._in_flight[record.node_id].pop((target.node_id, cancel.request_id), None)

    def _undeliverable(self, record, target_id, header, code, text):
        """Refuse a well-formed RELAY: inside the relay for an inner request, else with an outer ERROR."""
        self.refused[code] += 1
        if header.is_request:
            inner = m.Error(code=int(code), ref_request_id=header.request_id, text=text[:MAX_ERROR_TEXT])
            record.send(m.Relay(target=target_id,
                                frame=encode_inner(self.magic, inner, header.request_id, response=True)))
        else:
            record.send(m.Error(code=int(code), ref_request_id=0, text=text[:MAX_ERROR_TEXT]))

    def _refuse(self, record, code, text, score=False):
        """An outer ERROR notification (RELAY is a notification), and the misbehaviour it costs."""
        self.refused[code] += 1
        record.send(m.Error(code=int(code), ref_request_id=0, text=text[:MAX_ERROR_TEXT]))
        if score:
            self.table.misbehaved(record.protocol, violation(text, code=code, fatal=False))
