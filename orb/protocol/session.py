# -*- test-case-name: tests.test_session -*-
"""
The sans-I/O session state machine.

    CONNECTING --connection_made--> HANDSHAKING --HELLO/HELLO_ACK--> READY
         any state --fatal ProtocolError--> ERROR
         READY --close()--> CLOSING;   any --connection_lost--> CLOSED

A Session never touches a socket or the reactor. The owner feeds it
bytes (``feed``), asks it for bytes to send (``send``, ``request``,
``data_to_send``), and calls ``tick()`` at ``next_deadline()``. Time comes
from an injected ``clock`` (anything with ``seconds()``).

Everything that affects the state lives here, as in h11's ``_state.py``.
"""

import collections
import enum
import hashlib
import random

import attrs

from orb.protocol.codes import SUPPORTED_FEATURES, ErrorCode
from orb.protocol.errors import (
    HandshakeTimeout,
    IdentityMismatch,
    ProtocolError,
    RateLimited,
    SelfConnection,
    UnexpectedMessage,
    UnsupportedMessage,
    VersionMismatch,
    WrongNetwork,
)
from orb.protocol.frame import (
    BASE_VERSION,
    DEFAULT_MAX_FRAME_BYTES,
    PROTOCOL_VERSIONS,
    Flag,
    FrameDecoder,
    encode_frame,
    network_magic,
)
from orb.protocol.messages import (
    MAX_ADDR_ENTRIES,
    MAX_LISTEN_ADDRESSES,
    Addr,
    Endpoint,
    Error,
    Hello,
    HelloAck,
    MessageType,
    Ping,
    Pong,
)

# Messages that expect an answer, and the types that may answer them
# (ERROR may answer any request).
RESPONSES = {
    MessageType.PING: MessageType.PONG,
    MessageType.GETADDR: MessageType.ADDR,
    MessageType.LOOKUP: MessageType.PEERS,
    MessageType.DEPLOY: MessageType.DEPLOY_ACK,
    MessageType.OFFER: MessageType.DEPLOY_ACK,
    MessageType.FETCH: MessageType.PACKAGE,
    MessageType.CHALLENGE: MessageType.PROOF,
    MessageType.INVOKE: MessageType.RESULT,
    MessageType.LOGS: MessageType.LOG_LINES,
    MessageType.NAME: MessageType.STATEMENT_ACK,
    MessageType.DEPRECATE: MessageType.STATEMENT_ACK,
    MessageType.REVOKE: MessageType.STATEMENT_ACK,
    MessageType.SECRET: MessageType.STATEMENT_ACK,
    MessageType.SEAL: MessageType.STATEMENT_ACK,
    MessageType.SYNC: MessageType.DELTA,
    MessageType.VOUCHER_ASK: MessageType.VOUCHERS,
}
REQUEST_TYPES = frozenset(RESPONSES)
# Types that only ever answer a request: without the RESPONSE flag they mean nothing.
# (ADDR and DELTA may also be pushed as notifications.)
RESPONSE_ONLY_TYPES = frozenset(RESPONSES.values()) - {MessageType.ADDR, MessageType.DELTA}
MAX_REQUEST_ID = 0xFFFFFFFF
MAX_FORGOTTEN = 256
# One SystemRandom for every session: an instance carries a 2.5 kB Mersenne state it
# never uses, and that was 4% of an idle session's memory. PING nonces only match a
# PONG to its PING inside one TLS session, so they come from a seeded Mersenne Twister
# rather than a getrandom() system call per PING.
_SYSTEM_RANDOM = random.SystemRandom()
_PING_RANDOM = random.Random(_SYSTEM_RANDOM.getrandbits(128))


class State(enum.Enum):
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    READY = "ready"
    CLOSING = "closing"
    ERROR = "error"
    CLOSED = "closed"


class SessionNotReady(RuntimeError):
    """Our own bug: a message was sent in a state that does not allow it."""


class TooManyRequests(RuntimeError):
    """Our own side has max_inflight_requests outstanding already."""


def node_id_for(public_key):
    """node id = SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).digest()


@attrs.frozen
class LocalIdentity:
    """
    What a node says about itself in HELLO and HELLO_ACK.

    ``listen`` is the addresses where the node accepts connections. A node
    often learns them only after its identity is built (it binds port 0,
    or learns its public address from a tracker), so ``listen_source`` may
    be a zero-argument callable returning them: it is consulted at every
    handshake, on both sides, and wins over ``listen``.
    """

    public_key: bytes
    roles: int
    features: int = int(SUPPORTED_FEATURES)
    listen: tuple = attrs.field(default=(), converter=tuple)
    user_agent: str = "orb/0.1"
    listen_source: object = attrs.field(default=None, eq=False, repr=False)
    node_id: bytes = attrs.field(init=False, eq=False, repr=False)  # SHA-256 of the key, computed once

    def __attrs_post_init__(self):
        object.__setattr__(self, "node_id", node_id_for(self.public_key))

    def advertised_listen(self):
        """The endpoints to put in HELLO/HELLO_ACK now: at most MAX_LISTEN_ADDRESSES, each once."""
        endpoints = self.listen if self.listen_source is None else tuple(self.listen_source() or ())
        unique = []
        for endpoint in endpoints:
            if isinstance(endpoint, tuple):
                endpoint = Endpoint(*endpoint)
            if endpoint not in unique:
                unique.append(endpoint)
        return tuple(unique[:MAX_LISTEN_ADDRESSES])


@attrs.frozen
class SessionConfig:
    network: str = "main"
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    versions: tuple = PROTOCOL_VERSIONS
    handshake_timeout_s: float = 10.0
    ping_interval_s: float = 30.0
    idle_timeout_s: float = 90.0
    pong_timeout_s: float = 60.0  # a PING unanswered this long closes the session, even if other frames come
    # Before READY a frame can only be HELLO, HELLO_ACK or ERROR: buffer no more than this for one.
    handshake_max_frame_bytes: int = 16 * 1024
    max_inflight_requests: int = 64
    addr_rate_per_s: float = 0.1
    addr_burst: int = MAX_ADDR_ENTRIES
    addr_credit_per_getaddr: int = MAX_ADDR_ENTRIES
    # The message types the node's handlers serve (requests and notifications
    # it acts on). None: deliver every type. Otherwise a frame of a v1 type
    # outside this set is refused with ERROR(unsupported), as an unknown type
    # is (RFC 12.2); PING, ERROR and responses are always handled.
    served_types: frozenset = attrs.field(default=None, converter=lambda v: None if v is None else frozenset(v))

    @property
    def magic(self):
        return network_magic(self.network)


@attrs.frozen
class RemoteInfo:
    """The authenticated remote end of a READY session."""

    node_id: bytes
    public_key: bytes
    roles: int
    features: int  # the negotiated set: ours AND theirs
    version: int
    listen: tuple
    observed_us: Endpoint  # our own address as the remote sees it
    user_agent: str
    timestamp: int


# --- events -----------------------------------------------------------------


@attrs.frozen
class HandshakeCompleted:
    remote: RemoteInfo


@attrs.frozen
class MessageReceived:
    message: object
    request_id: int
    is_response: bool


@attrs.frozen
class RttMeasured:
    rtt_ms: float


@attrs.frozen
class ErrorReceived:
    code: int
    text: str
    ref_request_id: int


@attrs.frozen
class Misbehaved:
    """
    The remote broke a rule we could survive. It got ERROR(code), unless the
    offending frame was itself an ERROR (never answered, RFC 5.8).
    """

    error: ProtocolError


@attrs.frozen
class AddrThrottled:
    dropped: int


@attrs.frozen
class SessionFailed:
    """A fatal error: send data_to_send(), then close the connection."""

    error: ProtocolError


class Session:
    def __init__(
        self,
        identity,
        clock,
        *,
        initiator,
        remote_address,
        config=SessionConfig(),
        is_own_nonce=lambda nonce: False,
        expected_node_id=None,
        rng=None,
    ):
        """
        :param identity: our LocalIdentity.
        :param clock: anything with ``seconds()``.
        :param initiator: True on the side that opened the connection;
            it sends HELLO first.
        :param remote_address: the remote's Endpoint as our transport sees it,
            sent in HELLO/HELLO_ACK so the remote learns its observed address.
        :param is_own_nonce: tells whether a HELLO nonce is one we sent on
            another session (self-connection detection).
        :param expected_node_id: when we dialled a known node, its id.
        """
        self.identity = identity
        self.clock = clock
        self.config = config
        self.initiator = initiator
        self.remote_address = remote_address
        self.is_own_nonce = is_own_nonce
        self.expected_node_id = expected_node_id
        self.rng = rng or _SYSTEM_RANDOM
        self._ping_rng = rng or _PING_RANDOM
        self._magic = config.magic
        self.state = State.CONNECTING
        self.remote = None
        self.version = BASE_VERSION
        self.certificate_key = None  # set by the TLS adapter before feeding
        self.on_frame = None  # optional callable(direction "rx"|"tx", MessageType, size_bytes) for statistics
        self.local_nonce = self.rng.getrandbits(64)
        self._decoder = FrameDecoder(self._magic, min(config.max_frame_bytes, config.handshake_max_frame_bytes),
                                     config.versions)
        self._outbox = []
        self._started_at = None
        self._last_rx = None
        self._next_request_id = self.rng.randrange(1, MAX_REQUEST_ID)
        self._pending = {}  # our request id -> (MessageType, sent at)
        self._inbound = {}  # remote request ids not yet answered (keys; an empty dict is 64 bytes, a set 216)
        self._ping_nonces = {}  # keepalive/RTT ping nonce -> sent at
        self._forgotten = collections.OrderedDict()  # ids we gave up on; their late answers are dropped
        self._addr_tokens = 1.0
        self._addr_refilled_at = None

    # --- lifecycle ---------------------------------------------------------

    def connection_made(self):
        if self.state is not State.CONNECTING:
            raise SessionNotReady(f"connection_made in state {self.state.value}")
        now = self.clock.seconds()
        self.state = State.HANDSHAKING
        self._started_at = self._last_rx = self._addr_refilled_at = now
        if self.initiator:
            hello = Hello(
                versions=self.config.versions,
                node_id=self.identity.node_id,
                public_key=self.identity.public_key,
                roles=self.identity.roles,
                features=self.identity.features,
                timestamp=int(now),
                nonce=self.local_nonce,
                observed=self.remote_address,
                listen=self.identity.advertised_listen(),
                user_agent=self.identity.user_agent,
            )
            self._queue(hello)

    def connection_lost(self):
        self.state = State.CLOSED
        self._pending.clear()
        self._inbound.clear()

    def close(self, text="shutting down", code=ErrorCode.SHUTDOWN):
        """
        Close on purpose: queue ERROR(code) as a notification, shutdown by
        default. Every deliberate close goes through here (or ``abort``) so
        that the remote always learns why (RFC 6.8, 6.9): a refusal after
        READY passes its own code (busy, denied). Nothing is queued when the
        session already ended (ERROR, CLOSING, CLOSED) or never started.
        """
        if self.state in (State.HANDSHAKING, State.READY):
            self._queue(Error(code=int(code), ref_request_id=0, text=_error_text(text)))
            self.state = State.CLOSING

    def abort(self, error):
        """Fail the session with ``error`` found outside the codec (e.g. by TLS): queue ERROR(code), stop."""
        return self._fail(error)

    def forget(self, request_id):
        """Stop waiting for the answer to one of our requests (it timed out)."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        if entry[0] == MessageType.PING:
            self._ping_nonces.clear()
        self._forgotten[request_id] = True
        if len(self._forgotten) > MAX_FORGOTTEN:
            self._forgotten.popitem(last=False)

    @property
    def pending_requests(self):
        return len(self._pending)

    # --- output --------------------------------------------------------------

    def data_to_send(self):
        """Bytes the session queued by itself (handshake, PONG, ERROR, keepalive)."""
        data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def send(self, message, *, response_to=0):
        """Encode a notification, or the response to remote request ``response_to``."""
        self._check_can_send(message)
        flags = 0
        if response_to:
            self._inbound.pop(response_to, None)
            flags = Flag.RESPONSE
        return self._encode(message, response_to, flags)

    def request(self, message):
        """Encode a request. Returns (request_id, bytes)."""
        self._check_can_send(message)
        if len(self._pending) >= self.config.max_inflight_requests:
            raise TooManyRequests(f"{len(self._pending)} requests outstanding")
        request_id = self._allocate_request_id()
        now = self.clock.seconds()
        self._pending[request_id] = (message.TYPE, now)
        if message.TYPE == MessageType.GETADDR:
            self._addr_tokens += self.config.addr_credit_per_getaddr
        elif message.TYPE == MessageType.PING:
            self._ping_nonces[message.nonce] = now
        return request_id, self._encode(message, request_id, 0)

    def ping(self):
        """Encode a PING whose PONG will yield RttMeasured; b"" while one is outstanding (one at a time)."""
        if self._ping_nonces:
            return b""
        return self.request(Ping(nonce=self._ping_rng.getrandbits(64)))[1]

    def _check_can_send(self, message):
        if self.state is not State.READY and not isinstance(message, Error):
            raise SessionNotReady(f"cannot send {message.TYPE.name} in state {self.state.value}")

    def _allocate_request_id(self):
        while True:
            request_id = self._next_request_id
            self._next_request_id = request_id % MAX_REQUEST_ID + 1
            if request_id not in self._pending:
                return request_id

    def _queue(self, message, request_id=0, flags=0):
        version = BASE_VERSION if isinstance(message, (Hello, HelloAck)) else self.version
        self._outbox.append(self._encode(message, request_id, flags, version))

    def _encode(self, message, request_id, flags, version=None):
        data = encode_frame(self._magic, message, request_id, flags, self.version if version is None else version)
        if self.on_frame is not None:
            self.on_frame("tx", message.TYPE, len(data))
        return data

    # --- timers --------------------------------------------------------------

    def next_deadline(self):
        if self.state is State.HANDSHAKING:
            return self._started_at + self.config.handshake_timeout_s
        if self.state is State.READY:
            if self._keepalive_outstanding():
                oldest_ping = min(self._ping_nonces.values())
                return min(self._last_rx + self.config.idle_timeout_s, oldest_ping + self.config.pong_timeout_s)
            return self._last_rx + self.config.ping_interval_s
        return None

    def tick(self):
        """Run the timers due at clock.seconds(); returns events."""
        now = self.clock.seconds()
        if self.state is State.HANDSHAKING and now >= self._started_at + self.config.handshake_timeout_s:
            return self._fail(HandshakeTimeout(f"no handshake after {self.config.handshake_timeout_s:g} s"))
        if self.state is State.READY:
            idle_s = now - self._last_rx
            if idle_s >= self.config.idle_timeout_s:
                return self._fail(HandshakeTimeout(f"nothing received for {idle_s:.0f} s"))
            if self._ping_nonces and now - min(self._ping_nonces.values()) >= self.config.pong_timeout_s:
                return self._fail(HandshakeTimeout(f"no PONG within {self.config.pong_timeout_s:g} s"))
            if idle_s >= self.config.ping_interval_s and not self._keepalive_outstanding():
                if len(self._pending) < self.config.max_inflight_requests:
                    self._outbox.append(self.ping())
        return []

    def _keepalive_outstanding(self):
        return bool(self._ping_nonces)

    # --- input ---------------------------------------------------------------

    def feed(self, data):
        """Bytes in, events out. Raises nothing on bad input."""
        if self.state in (State.ERROR, State.CLOSED, State.CONNECTING):
            return []
        try:
            items = self._decoder.feed(data)
        except ProtocolError as e:
            return self._fail(e)
        events = []
        for item in items:
            if self.state in (State.ERROR, State.CLOSED):
                break
            self._last_rx = self.clock.seconds()
            if self.on_frame is not None and not isinstance(item, ProtocolError):
                self.on_frame("rx", item.message.TYPE, item.size)
            try:
                if isinstance(item, ProtocolError):
                    raise item
                try:
                    events.extend(self._frame_received(item))
                except ProtocolError as e:
                    raise e.about_frame(item.message.TYPE, item.flags, item.request_id)
            except ProtocolError as e:
                if e.fatal or self.state is State.HANDSHAKING:
                    events.extend(self._fail(e))
                else:
                    events.extend(self._refuse(e))
        return events

    def _frame_received(self, frame):
        message = frame.message
        if self.state is State.HANDSHAKING:
            return self._handshake_frame(frame)
        if isinstance(message, (Hello, HelloAck)):
            raise UnexpectedMessage(f"{message.TYPE.name} after the handshake", frame.request_id)
        if frame.version != self.version:
            raise VersionMismatch(f"frame version {frame.version} in a version-{self.version} session")
        if isinstance(message, Error):
            # ref_request_id is authoritative, with or without the RESPONSE flag.
            self._pending.pop(message.ref_request_id, None)
            self._forgotten.pop(message.ref_request_id, None)
            return [ErrorReceived(message.code, message.text, message.ref_request_id)]
        if frame.is_response:
            if self._forgotten.pop(frame.request_id, None):
                return []  # a late answer to a request we gave up on
            return self._response_received(frame)
        if message.TYPE == MessageType.PING:
            if not frame.request_id:
                raise UnexpectedMessage("PING request without a request id")
            self._outbox.append(self._encode(Pong(nonce=message.nonce), frame.request_id, Flag.RESPONSE))
            return []
        if message.TYPE in RESPONSE_ONLY_TYPES:
            raise UnexpectedMessage(f"{message.TYPE.name} without the RESPONSE flag answers nothing")
        served = self.config.served_types
        if served is not None and message.TYPE not in served:
            raise UnsupportedMessage(f"{message.TYPE.name} is not served by this node")
        if isinstance(message, Addr):
            return self._addr_received(frame, message)
        if message.TYPE == MessageType.CANCEL:
            self._inbound.pop(message.request_id, None)  # withdrawn: it gets no answer and no longer counts (RFC 5.21)
        if message.TYPE in REQUEST_TYPES:
            if not frame.request_id:
                raise UnexpectedMessage(f"{message.TYPE.name} request without a request id")
            if frame.request_id in self._inbound:
                raise UnexpectedMessage(f"request id {frame.request_id} is already in use", frame.request_id)
            if len(self._inbound) >= self.config.max_inflight_requests:
                raise RateLimited(
                    f"more than {self.config.max_inflight_requests} requests in flight", frame.request_id
                )
            self._inbound[frame.request_id] = None
        return [MessageReceived(message, frame.request_id, False)]

    def _response_received(self, frame):
        pending = self._pending.get(frame.request_id)
        message = frame.message
        if pending is None or RESPONSES[pending[0]] != message.TYPE:
            raise UnexpectedMessage(
                f"{message.TYPE.name} answers no request of ours (id {frame.request_id})", frame.request_id
            )
        del self._pending[frame.request_id]
        if isinstance(message, Pong):
            sent_at = self._ping_nonces.pop(message.nonce, None)
            if sent_at is None:
                raise UnexpectedMessage(f"PONG with an unknown nonce {message.nonce}", frame.request_id)
            return [RttMeasured((self.clock.seconds() - sent_at) * 1000.0)]
        if isinstance(message, Addr):
            return self._addr_received(frame, message)
        return [MessageReceived(message, frame.request_id, True)]

    def _addr_received(self, frame, message):
        now = self.clock.seconds()
        if self._addr_tokens < self.config.addr_burst:  # refill up to the burst; GETADDR credit may exceed it
            refill = (now - self._addr_refilled_at) * self.config.addr_rate_per_s
            self._addr_tokens = min(self.config.addr_burst, self._addr_tokens + refill)
        self._addr_refilled_at = now
        allowed = int(self._addr_tokens)
        entries = message.entries
        events = []
        if len(entries) > allowed:
            events.append(AddrThrottled(len(entries) - allowed))
            message = attrs.evolve(message, entries=entries[:allowed])
        self._addr_tokens -= len(message.entries)
        events.append(MessageReceived(message, frame.request_id, frame.is_response))
        return events

    # --- handshake -------------------------------------------------------------

    def _handshake_frame(self, frame):
        message = frame.message
        if isinstance(message, Error):
            # The remote refused the session: stop here, without answering.
            self.state = State.ERROR
            return [ErrorReceived(message.code, message.text, message.ref_request_id)]
        if self.initiator:
            if not isinstance(message, HelloAck):
                raise UnexpectedMessage(f"expected HELLO_ACK, got {message.TYPE.name}", frame.request_id)
            if message.version not in self.config.versions:
                raise VersionMismatch(f"HELLO_ACK chose version {message.version}")
            self._check_identity(message)
            self.version = message.version
            return self._ready(message, message.version)
        if not isinstance(message, Hello):
            raise UnexpectedMessage(f"expected HELLO, got {message.TYPE.name}", frame.request_id)
        common = set(message.versions) & set(self.config.versions)
        if not common:
            raise VersionMismatch(
                f"no common version: remote speaks {sorted(message.versions)}, we speak {sorted(self.config.versions)}"
            )
        if self.is_own_nonce(message.nonce):
            raise SelfConnection("HELLO carries one of our own nonces")
        self._check_identity(message)
        version = max(common)
        ack = HelloAck(
            version=version,
            node_id=self.identity.node_id,
            public_key=self.identity.public_key,
            roles=self.identity.roles,
            features=self.identity.features,
            timestamp=int(self.clock.seconds()),
            nonce=self.local_nonce,
            observed=self.remote_address,
            listen=self.identity.advertised_listen(),
            user_agent=self.identity.user_agent,
        )
        self._queue(ack)
        self.version = version
        return self._ready(message, version)

    def _check_identity(self, hello):
        if node_id_for(hello.public_key) != hello.node_id:
            raise IdentityMismatch("node id is not the SHA-256 of the public key")
        if self.certificate_key is not None and self.certificate_key != hello.public_key:
            raise IdentityMismatch("TLS certificate key differs from the HELLO key")
        if hello.node_id == self.identity.node_id:
            raise SelfConnection("the remote has our own node id")
        if self.expected_node_id is not None and hello.node_id != self.expected_node_id:
            raise IdentityMismatch(
                f"dialled node {self.expected_node_id.hex()[:16]}, reached {hello.node_id.hex()[:16]}"
            )

    def _ready(self, hello, version):
        self.remote = RemoteInfo(
            node_id=hello.node_id,
            public_key=hello.public_key,
            roles=hello.roles,
            features=hello.features & self.identity.features & int(SUPPORTED_FEATURES),
            version=version,
            listen=hello.listen,
            observed_us=hello.observed,
            user_agent=hello.user_agent,
            timestamp=hello.timestamp,
        )
        self.state = State.READY
        self._decoder.max_frame_bytes = self.config.max_frame_bytes
        return [HandshakeCompleted(self.remote)]

    # --- errors ------------------------------------------------------------------

    def _refuse(self, error):
        """
        A survivable violation: ERROR(code) and carry on (RFC 5.8). The ERROR
        answers the frame (RESPONSE flag, its id) only when that frame is a
        request of the remote; about a notification or a response it is a
        notification with ref_request_id 0. An ERROR frame is never answered.
        """
        if error.message_type != MessageType.ERROR:
            ref = _remote_request_id(error)
            self._queue(
                Error(code=error.code, ref_request_id=ref, text=_error_text(error.message)),
                ref,
                Flag.RESPONSE if ref else 0,
            )
        return [Misbehaved(error)]

    def _fail(self, error):
        """
        A fatal violation: queue ERROR(code) as a notification, and stop. No
        ERROR is sent when the remote is not ORB at all (wrong magic), nor
        when the offending frame is itself an ERROR: the connection just closes.
        """
        if self.state in (State.ERROR, State.CLOSED):
            return []
        closing = self.state is State.CLOSING  # our closing ERROR is already queued: one per session
        if not closing and not isinstance(error, WrongNetwork) and error.message_type != MessageType.ERROR:
            ref = _remote_request_id(error)
            self._queue(Error(code=error.code, ref_request_id=ref, text=_error_text(error.message)))
        self.state = State.ERROR
        self._pending.clear()
        self._inbound.clear()
        return [SessionFailed(error)]


MAX_SENT_ERROR_CHARS = 200  # 200 characters are at most 800 UTF-8 bytes, within ERROR's 1024


def _error_text(text):
    return text[:MAX_SENT_ERROR_CHARS]


def _remote_request_id(error):
    """
    The id an ERROR about the offending frame refers to: the frame's request
    id when it is a request of the remote (nonzero id, no RESPONSE flag),
    else 0. A response's id belongs to our own id space, so naming it would
    end an unrelated request of the remote's (RFC 4.6).
    """
    if error.request_id and not error.flags & Flag.RESPONSE:
        return error.request_id
    return 0
