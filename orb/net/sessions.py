# -*- test-case-name: tests.test_sessions -*-
"""
The session table: a daemon's live sessions, as records the table owns,
and the one dispatch table that routes each message type to its handler.

Both roles hold one ``SessionTable``. It is the handler the wire adapter
reports to (``orb.net.adapter.SessionHandler``): it admits or refuses each
new session, scores misbehaviour and discourages bad remotes, and hands
every request or notification to the handler registered for its type in
``handlers`` (filled by the daemon's wiring module). Components that care
about sessions coming and going subscribe to ``ready_listeners``,
``lost_listeners`` and ``rtt_listeners``; components that refuse some
sessions add a check to ``admission``.

Dialling lives here too (``dial``), since a dial is a session the table
will hold. The transport is a ``connector``: TLS over TCP in a daemon,
in-memory transports in the discovery simulation.
"""

import collections
import enum

import attrs
from twisted.internet import defer, endpoints, error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from orb.net.adapter import OrbFactory, OwnNonces, RemoteError, SessionHandler
from orb.net.logs import RemoteLogLimit, escape, orb_logger
from orb.protocol import addresses
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.session import LocalIdentity, SessionConfig

log = orb_logger()
_NONE = object()

MAX_SESSIONS = 4096  # a hard bound on ready sessions of any kind
DISCOURAGE_S = 24 * 3600
MAX_DISCOURAGED_IDS = 10_000
MISBEHAVIOUR_LIMIT = 100  # score at which a node is discouraged and dropped
DIAL_TIMEOUT_S = 5.0
MAX_ERROR_TEXT = 200
MAX_PENDING = 512  # inbound connections not yet through the handshake, in all
MAX_PENDING_PER_IP = 32  # ... and from one IP address

# What each survivable violation costs; fatal ones cost MISBEHAVIOUR_LIMIT.
MISBEHAVIOUR_SCORES = {
    ErrorCode.UNEXPECTED: 10,
    ErrorCode.UNSUPPORTED: 1,
    ErrorCode.RATE_LIMITED: 20,
}
DEFAULT_SCORE = 10


class Purpose(enum.Enum):
    """Why a session was dialled."""

    REGULAR = "regular"  # a session the daemon keeps and serves
    DIALBACK = "dialback"  # a tracker checks that a peer accepts connections
    PROBE = "probe"  # test-before-evict: is a tried address still alive?
    FETCH = "fetch"  # a package download from a source we had no session with (orb.net.fetch)


class Reachability(enum.Enum):
    """Whether a peer accepts connections at the address it advertises."""

    UNKNOWN = "unknown"
    REACHABLE = "reachable"
    RELAYED = "relayed"  # reached only through its tracker sessions


@attrs.frozen
class Refusal:
    """Why an admission check turned a session away, and the ERROR code sent."""

    reason: str
    code: ErrorCode = ErrorCode.BUSY


@attrs.define(eq=False)
class Dial:
    """One outbound dial: where to, why, and who waits for its session."""

    host: str
    port: int
    purpose: Purpose
    ready: defer.Deferred = attrs.field(factory=defer.Deferred)

    @property
    def address(self):
        return self.host, self.port


@attrs.define(eq=False)
class SessionRecord:
    """What the daemon knows about one session. The table owns it."""

    protocol: object
    dial: Dial | None  # None for an inbound session
    opened_at: float
    score: int = 0
    getaddr_answered_at: float | None = None  # when we last answered this remote's GETADDR
    addr_asked_at: float | None = None  # when we last sent it GETADDR
    syncing: bool = False  # a SYNC of ours is in flight on it

    @property
    def inbound(self):
        return self.dial is None

    @property
    def purpose(self):
        return Purpose.REGULAR if self.dial is None else self.dial.purpose

    @property
    def remote(self):
        return self.protocol.remote

    @property
    def node_id(self):
        return self.protocol.remote.node_id

    @property
    def is_tracker(self):
        return bool(self.protocol.remote.roles & Role.TRACKER)

    @property
    def ready(self):
        return self.protocol.ready

    @property
    def rtt_ms(self):
        return self.protocol.rtt_ms

    @property
    def ip(self):
        return peer_ip(self.protocol)

    @property
    def dialled(self):
        """The (host, port) we dialled, for an outbound session."""
        return None if self.dial is None else self.dial.address

    @property
    def name(self):
        return self.protocol.remote.node_id.hex()[:16]

    def send(self, message, response_to=0):
        self.protocol.send(message, response_to=response_to)

    def request(self, message, timeout_s=30.0):
        return self.protocol.request(message, timeout_s=timeout_s)

    def refuse(self, request_id, code, text):
        """Answer a request with ERROR; notifications (request id 0) get none."""
        if request_id and self.protocol.ready:
            self.send(m.Error(code=int(code), ref_request_id=request_id, text=text[:MAX_ERROR_TEXT]),
                      response_to=request_id)

    def close(self, text, code=ErrorCode.SHUTDOWN):
        self.protocol.close(text, code)


@attrs.define
class LocalNode:
    """This node as it presents itself: key, roles, advertised address."""

    key: object
    roles: Role
    user_agent: str = "orb/0.1"
    session_config: SessionConfig = SessionConfig()
    advertise: tuple | None = None  # (host, port) others should dial, once known
    listening: tuple | None = None  # (host, port) actually bound, set by the service
    own_nonces: OwnNonces = attrs.field(factory=OwnNonces)
    _identity: tuple = attrs.field(default=(None, None), init=False, eq=False, repr=False)  # (what it says, from)

    @property
    def node_id(self):
        return self.key.node_id

    def identity(self):
        """What HELLO and HELLO_ACK say now; built again only when the node's roles or address change."""
        said = (self.key, self.roles, self.advertise, self.user_agent)
        if self._identity[1] != said:
            listen = (m.Endpoint(*self.advertise),) if self.advertise else ()
            identity = LocalIdentity(self.key.public_bytes, int(self.roles), listen=listen, user_agent=self.user_agent)
            self._identity = (identity, said)
        return self._identity[0]

    def is_own(self, address):
        return address is not None and address in (self.advertise, self.listening)

    def addr_entry(self, timestamp):
        host, port = self.advertise
        return m.AddrEntry(int(timestamp), host, port, int(self.roles), self.node_id)


class _Refused(Protocol):
    """Closes at once: the connection was refused before any handshake work."""

    def connectionMade(self):
        abort = getattr(self.transport, "abortConnection", None) or self.transport.loseConnection
        abort()


class ListenerFactory(OrbFactory):
    """The listener's factory: refuses a connection before its handshake when
    the node is full (inbound cap) or too many handshakes are pending, in all
    or from the connecting IP."""

    def __init__(self, table, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table

    def buildProtocol(self, addr):
        ip = getattr(addr, "host", None)
        reason = self.table.pre_handshake_refusal(ip)
        if reason is not None:
            if self.table.log_limit.allow(ip):
                log.info("refusing a connection from {ip} before its handshake: {reason}", ip=ip, reason=reason)
            return _Refused()
        protocol = super().buildProtocol(addr)
        self.table.pending_opened(protocol, ip)
        return protocol


class TLSConnector:
    """Opens TLS-over-TCP connections for dials.  A dial to a DNS name in CA
    mode (``server_name``) verifies the remote's certificate chain against
    ``ca_certificates`` and the name with service-identity (RFC 7.4)."""

    def __init__(self, reactor, tls, ca_certificates=()):
        self.reactor = reactor
        self.tls = tls
        self.ca_certificates = list(ca_certificates)

    def connect(self, host, port, factory, server_name=None):
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from orb.net.tls import ca_client_options

        cls = endpoints.TCP6ClientEndpoint if ":" in host else endpoints.TCP4ClientEndpoint
        if server_name is not None:
            if not self.ca_certificates:
                return defer.fail(ValueError(f"no trust anchors (--ca) to verify {server_name}"))
            creator = ca_client_options(server_name, self.ca_certificates, self.tls.node_key)
            wrapped = TLSMemoryBIOFactory(creator, True, factory)
        else:
            wrapped = self.tls.wrap(factory, is_client=True)
        wrapped.noisy = False
        return cls(self.reactor, host, port, timeout=DIAL_TIMEOUT_S).connect(wrapped)


def peer_ip(protocol):
    transport = getattr(protocol, "transport", None)
    peer = transport.getPeer() if transport is not None else None
    return getattr(peer, "host", None)


def _is_ip(host):
    try:
        addresses.check_ip(host)
    except addresses.AddressError:
        return False
    return True


def is_loopback(ip):
    return ip.startswith("127.") or ip == "::1"


class _Violation:
    """A rule broken at the daemon level (the session layer reports its own)."""

    def __init__(self, code, message, fatal=False):
        self.code = code
        self.message = message
        self.fatal = fatal


def violation(message, code=ErrorCode.MALFORMED, fatal=True):
    return _Violation(code, str(message), fatal)


class SessionTable(SessionHandler):
    """The sessions of one daemon, the dispatch table, and misbehaviour."""

    def __init__(self, clock, local, addrbook, *, connector=None, max_inbound=117, frame_counter=None,
                 tls_binding=True):
        self.clock = clock
        self.local = local
        self.addrbook = addrbook
        self.connector = connector
        self.max_inbound = max_inbound
        self.frame_counter = frame_counter
        self.tls_binding = tls_binding
        self.handlers = {}  # MessageType -> callable(record, message, request_id)
        self.admission = []  # callables(record) -> Refusal | None, asked in order
        self.ready_listeners = []  # callables(record)
        self.lost_listeners = []  # callables(record)
        self.rtt_listeners = []  # callables(record, rtt_ms)
        self.stopping = False
        self._records = {}  # node id -> SessionRecord (admitted, regular)
        self._inbound_records = 0  # how many of them are inbound: asked before every inbound handshake
        self._by_protocol = {}  # protocol -> SessionRecord (admitted, regular)
        self._unadmitted_scores = {}  # protocol -> score, before or without admission
        self._dialling = {}  # (host, port, Purpose) -> Dial
        self._banned_ids = collections.OrderedDict()  # node id -> until (seconds)
        self._pending = {}  # inbound protocol before its handshake -> its IP
        self._pending_per_ip = collections.Counter()
        self.log_limit = RemoteLogLimit(clock)

    # --- what components read -------------------------------------------------------

    def __len__(self):
        return len(self._records)

    def __contains__(self, node_id):
        return node_id in self._records

    def get(self, node_id):
        return self._records.get(node_id)

    def records(self):
        return [r for r in self._records.values() if r.ready]

    def outbound(self, trackers=None):
        """Ready outbound sessions; ``trackers`` True/False filters by role."""
        found = [r for r in self.records() if not r.inbound]
        if trackers is None:
            return found
        return [r for r in found if r.is_tracker == trackers]

    def inbound_count(self):
        return self._inbound_records

    def is_dialling(self, host, port, purpose=Purpose.REGULAR):
        return (host, port, purpose) in self._dialling

    def dialling_count(self, purpose=Purpose.REGULAR):
        return sum(1 for key in self._dialling if key[2] is purpose)

    def is_banned(self, node_id):
        until = self._banned_ids.get(node_id)
        return until is not None and until > self.clock.seconds()

    # --- factories and dialling -----------------------------------------------------

    def factory(self, dial=None, expected_node_id=None):
        """An OrbFactory for one dial, or (dial=None) the listener's ListenerFactory."""
        kwargs = dict(config=self.local.session_config, own_nonces=self.local.own_nonces,
                      expected_node_id=expected_node_id, frame_counter=self.frame_counter,
                      tls_binding=self.tls_binding, dial=dial, log_limit=self.log_limit)
        if dial is None:
            return ListenerFactory(self, self.local.identity, self, self.clock, initiator=False, **kwargs)
        return OrbFactory(self.local.identity, self, self.clock, initiator=True, **kwargs)

    # --- inbound connections before their handshake ---------------------------------

    def pre_handshake_refusal(self, ip):
        if self.stopping:
            return "shutting down"
        if self.inbound_count() >= self.max_inbound:
            return "too many inbound connections"
        if len(self._pending) >= MAX_PENDING:
            return "too many handshakes pending"
        if self._pending_per_ip[ip] >= MAX_PENDING_PER_IP:
            return "too many handshakes pending from this address"
        return None

    def pending_opened(self, protocol, ip):
        self._pending[protocol] = ip
        self._pending_per_ip[ip] += 1

    def _pending_closed(self, protocol):
        ip = self._pending.pop(protocol, _NONE)
        if ip is not _NONE:
            self._pending_per_ip[ip] -= 1
            if self._pending_per_ip[ip] <= 0:
                del self._pending_per_ip[ip]

    def pending_count(self, ip=None):
        return len(self._pending) if ip is None else self._pending_per_ip.get(ip, 0)

    def dial(self, host, port, expected_node_id=None, purpose=Purpose.REGULAR, server_name=None):
        """Connect; fires with the ready SessionRecord, or fails.  With
        ``server_name`` the remote must present a CA-issued certificate for
        that name (CA mode); ``host`` may then be the name itself."""
        key = (host, port, purpose)
        dial = Dial(host, port, purpose)
        self._dialling[key] = dial
        factory = self.factory(dial, expected_node_id)
        if server_name is None:
            connecting = self.connector.connect(host, port, factory)
        else:
            connecting = self.connector.connect(host, port, factory, server_name=server_name)
        connecting.addErrback(lambda f: dial.ready.called or dial.ready.errback(f))

        def done(outcome):
            if self._dialling.get(key) is dial:
                del self._dialling[key]
            if isinstance(outcome, Failure) and purpose is Purpose.REGULAR and server_name is None:
                self.addrbook.attempt(host, port)
            return outcome

        return dial.ready.addBoth(done)

    # --- the adapter's events -------------------------------------------------------

    def session_ready(self, protocol):
        self._pending_closed(protocol)
        dial = protocol.factory.dial
        record = SessionRecord(protocol, dial, self.clock.seconds())
        if record.purpose is not Purpose.REGULAR:
            dial.ready.callback(record)  # dial-backs and probes are never served
            return
        refusal = self._refusal(record)
        if refusal is not None:
            if self.log_limit.allow(record.node_id):
                log.debug("refusing session with {peer}: {reason}", peer=record.name, reason=refusal.reason)
            protocol.close(refusal.reason, refusal.code)
            if dial is not None and not dial.ready.called:
                dial.ready.errback(RemoteError(refusal.code, refusal.reason))
            return
        self._records[record.node_id] = record
        self._inbound_records += record.inbound
        self._by_protocol[protocol] = record
        if dial is not None:
            if _is_ip(dial.host):  # not a CA-mode dial to a DNS name
                self.addrbook.good(dial.host, dial.port, node_id=record.node_id)
        for listener in self.ready_listeners:
            listener(record)
        if dial is not None and not dial.ready.called:
            dial.ready.callback(record)

    def _refusal(self, record):
        if self.stopping:
            return Refusal("shutting down", ErrorCode.SHUTDOWN)
        for check in self.admission:
            refusal = check(record)
            if refusal is not None:
                return refusal
        if record.node_id in self._records:
            return Refusal("duplicate session")
        if self.is_banned(record.node_id):
            return Refusal("discouraged", ErrorCode.DENIED)
        if record.inbound:
            ip = record.ip
            if ip and self.addrbook.is_discouraged(ip):
                return Refusal("discouraged", ErrorCode.DENIED)
            if self.inbound_count() >= self.max_inbound:
                return Refusal("too many inbound connections")
        if len(self._records) >= MAX_SESSIONS:
            return Refusal("too many sessions")
        return None

    def message_received(self, protocol, message, request_id):
        record = self._by_protocol.get(protocol)
        if record is None:
            return  # a dial-back, a probe or a refused session: nothing is served on it
        handler = self.handlers.get(message.TYPE)
        if handler is None:
            # Defined by v1 but not served here: the same answer as an unknown type.
            record.refuse(request_id, ErrorCode.UNSUPPORTED, f"{message.TYPE.name} is not served by this node")
            self.misbehaved(protocol, _Violation(ErrorCode.UNSUPPORTED, "unsupported message type"))
            return
        try:
            handler(record, message, request_id)
        except Exception:
            log.failure("handling {type} from {peer}", type=message.TYPE.name, peer=record.name)
            record.refuse(request_id, ErrorCode.INTERNAL, "internal error")

    def rtt_measured(self, protocol, rtt_ms):
        record = self._by_protocol.get(protocol)
        if record is not None:
            for listener in self.rtt_listeners:
                listener(record, rtt_ms)

    def session_lost(self, protocol, reason):
        self._pending_closed(protocol)
        self._unadmitted_scores.pop(protocol, None)
        dial = protocol.factory.dial
        if dial is not None and not dial.ready.called:
            dial.ready.errback(reason if reason is not None else error.ConnectionLost("closed before the handshake"))
        record = self._by_protocol.pop(protocol, None)
        if record is not None and self._records.get(record.node_id) is record:
            del self._records[record.node_id]
            self._inbound_records -= record.inbound
            for listener in self.lost_listeners:
                listener(record)

    def misbehaved(self, protocol, err):
        """Score the remote; at the limit (or on a fatal error) discourage and drop it."""
        code = getattr(err, "code", ErrorCode.UNSPECIFIED)
        fatal = getattr(err, "fatal", False)
        cost = MISBEHAVIOUR_LIMIT if fatal else MISBEHAVIOUR_SCORES.get(code, DEFAULT_SCORE)
        record = self._by_protocol.get(protocol)
        if record is not None:
            record.score += cost
            score = record.score
        else:
            score = self._unadmitted_scores.get(protocol, 0) + cost
            self._unadmitted_scores[protocol] = score
        if score < MISBEHAVIOUR_LIMIT:
            return
        self.discourage(protocol, getattr(err, "message", repr(err)))

    def discourage(self, protocol, why):
        until = self.clock.seconds() + DISCOURAGE_S
        ip = peer_ip(protocol)
        if ip and not is_loopback(ip):
            # On loopback every node shares one address: ban by node id only.
            self.addrbook.discourage(ip, until)
        remote = protocol.remote
        if remote is not None:
            self._banned_ids.pop(remote.node_id, None)
            self._banned_ids[remote.node_id] = until
            while len(self._banned_ids) > MAX_DISCOURAGED_IDS:
                self._banned_ids.popitem(last=False)
        log.warn("discouraging {peer} ({ip}) for misbehaviour: {error}",
                 peer=remote.node_id.hex()[:16] if remote is not None else "?", ip=ip, error=escape(why, 120))
        # A fatal close says why first (RFC Section 6.8); after a session-level
        # failure the session has already sent its ERROR and only disconnects.
        protocol.close("discouraged: misbehaviour", ErrorCode.DENIED)

    # --- shutting down --------------------------------------------------------------

    def close_all(self, text="node shutting down"):
        self.stopping = True
        for record in list(self._records.values()):
            record.close(text)



def session_status(table, addrbook):
    """A summary for operators and tests (the service writes it to status.json)."""
    records = table.records()
    outbound = [r for r in records if not r.inbound]
    advertise = table.local.advertise
    return {
        "node_id": table.local.node_id.hex(),
        "sessions": len(records),
        "inbound": len(records) - len(outbound),
        "outbound_peers": sum(1 for r in outbound if not r.is_tracker),
        "outbound_trackers": sum(1 for r in outbound if r.is_tracker),
        "peer_sessions": sum(1 for r in records if not r.is_tracker),
        "address_book": len(addrbook),
        "advertise": list(advertise) if advertise else None,
    }
