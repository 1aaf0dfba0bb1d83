# -*- test-case-name: tests.test_node -*-
"""
What every ORB daemon does, tracker or peer: its identity, its listener,
its sessions, dialling out over TLS, the address book and GETADDR/ADDR
gossip, misbehaviour handling, and persistence on start and stop.

``Node`` is the core behind the wire adapter: it sees messages, never
bytes. Subclasses (``orb.tracker.service.Tracker``,
``orb.peer.service.Peer``) add their business logic through the
``on_session_ready`` / ``on_session_lost`` hooks and ``rx_<type>``
methods, one per message type they accept.
"""

import collections
import os
import random
import sys

import attrs
from twisted.application import service
from twisted.internet import defer, endpoints, error, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from orb._db import Database
from orb.identity import NodeKey
from orb.net import addrbook as ab
from orb.protocol import messages as m
from orb.net.adapter import OrbFactory, OwnNonces, RemoteError, RequestTimeout, SessionHandler
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.net.tls import NodeTLS

log = Logger()

MAX_SESSIONS = 4096  # a hard bound on ready sessions of any kind
ADDR_RELAY_FANOUT = 2  # fresh addresses go to this many random sessions
ADDR_RELAY_MAX_ENTRIES = 10  # larger ADDR messages are answers, not news; not relayed
ADDR_FRESH_S = 10 * 60  # an address is fresh if its timestamp is this recent
ADDR_RELAY_ONCE_S = 24 * 3600  # an address is relayed at most once a day (as Bitcoin does)
MAX_RELAYED_REMEMBERED = 10_000
DISCOURAGE_S = 24 * 3600
MISBEHAVIOUR_LIMIT = 100  # score at which a node is discouraged and dropped
SAVE_INTERVAL_S = 5.0
MAINTAIN_INTERVAL_S = 1.0
DIAL_TIMEOUT_S = 5.0
ADDR_BOOK_FILE = "addrbook.sqlite"

# How much each survivable violation costs; fatal ones cost MISBEHAVIOUR_LIMIT.
MISBEHAVIOUR_SCORES = {
    ErrorCode.UNEXPECTED: 10,
    ErrorCode.UNSUPPORTED: 1,
    ErrorCode.RATE_LIMITED: 20,
}


@attrs.frozen
class NodeConfig:
    data_dir: str
    network: str = "main"
    listen: str = "tcp:7400:interface=127.0.0.1"
    advertise: tuple = None  # (host, port) others should dial, or None
    bootstrap: tuple = ()  # ((host, port), ...) trackers to join
    max_inbound: int = 117
    user_agent: str = "orb/0.1"
    allow_loopback: bool = True  # accept 127/8 and ::1 in the address book
    allow_private: bool = True
    session: SessionConfig = SessionConfig()


def endpoint_text(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_ip(protocol):
    peer = protocol.transport.getPeer() if protocol.transport else None
    return getattr(peer, "host", None)


class StartupError(Exception):
    """The daemon cannot start: one line for the operator."""


class Node(service.Service, SessionHandler):
    roles = Role.PEER

    def __init__(self, config, reactor, key=None, rng=None):
        self.config = config
        self.reactor = reactor
        self.clock = reactor
        self.rng = rng or random.SystemRandom()
        self.key = key or NodeKey.load_or_create(config.data_dir)
        self.node_id = self.key.node_id
        self.tls = NodeTLS(self.key)
        self.own_nonces = OwnNonces()
        self.sessions = {}  # node id -> ready OrbProtocol
        self.dialling = {}  # (host, port, purpose) -> when the dial started
        self.inbound = set()  # ready inbound protocols
        self.misbehaviour = {}  # OrbProtocol -> score
        self.relayed = collections.OrderedDict()  # (host, port) -> when we last relayed it
        self.banned_ids = {}  # node id -> until (seconds)
        self.addrbook = None
        self.listening_port = None
        self.advertise = config.advertise  # (host, port) others should dial, once known
        self.started = defer.Deferred()
        self._loops = []
        self._stopping = False

    # --- identity -----------------------------------------------------------------

    def local_identity(self):
        listen = ()
        if self.advertise:
            listen = (m.Endpoint(*self.advertise),)
        return LocalIdentity(self.key.public_bytes, int(self.roles), listen=listen, user_agent=self.config.user_agent)

    def make_factory(self, initiator, expected_node_id=None, purpose="regular"):
        factory = OrbFactory(
            self.local_identity(), self, self.clock, initiator=initiator, config=self.config.session,
            own_nonces=self.own_nonces, expected_node_id=expected_node_id, frame_counter=self.count_frame,
        )
        factory.purpose = purpose
        factory.ready = defer.Deferred() if initiator else None
        return factory

    def count_frame(self, direction, message_type):
        """Statistics hook; the tracker counts, the peer does not."""

    # --- lifecycle ---------------------------------------------------------------------

    def startService(self):
        super().startService()
        d = self._start()
        d.addCallbacks(self.started.callback, self._start_failed)

    @defer.inlineCallbacks
    def _start(self):
        path = os.path.join(self.config.data_dir, ADDR_BOOK_FILE)
        self.addr_db = yield Database.open(self.reactor, path, ab.MIGRATIONS)
        self.addrbook = yield ab.AddressBook.load(
            self.addr_db, self.clock, allow_loopback=self.config.allow_loopback,
            allow_private=self.config.allow_private,
        )
        yield self.load_state()
        try:
            endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
            wrapped = self.tls.wrap(self.make_factory(False), is_client=False)
            wrapped.noisy = False
            self.listening_port = yield endpoint.listen(wrapped)
        except error.CannotListenError as e:
            raise StartupError(f"cannot listen on {self.config.listen}: {e.socketError}") from None
        address = self.listening_port.getHost()
        if self.advertise is None and address.host not in ("0.0.0.0", "::"):
            self.advertise = (address.host, address.port)
        log.info("{kind} {node_id} listening on {host}:{port} (network {network})", kind=type(self).__name__.lower(),
                 node_id=self.node_id.hex()[:16], host=address.host, port=address.port, network=self.config.network)
        self.start_loop(self.maintain, MAINTAIN_INTERVAL_S)
        self.start_loop(self.save_state, SAVE_INTERVAL_S, now=False)
        yield self.on_started()
        self._write_json("status.json", self.status())
        self._write_ports()
        return self

    def _listen_address(self):
        if self.listening_port is None:
            return None
        address = self.listening_port.getHost()
        return address.host, address.port

    def ports(self):
        """The ports actually bound (useful with port 0), written to ports.json."""
        return {"wire": self.listening_port.getHost().port}

    def _write_ports(self):
        self._write_json("ports.json", {**self.ports(), "node_id": self.node_id.hex(), "pid": os.getpid()})

    def _write_json(self, name, obj):
        import json

        path = os.path.join(self.config.data_dir, name)
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f)
        os.replace(path + ".tmp", path)

    def _start_failed(self, failure):
        message = failure.getErrorMessage() if failure.check(StartupError) else repr(failure.value)
        if not failure.check(StartupError):
            log.failure("start-up failed", failure)
        sys.stderr.write(f"{type(self).__name__.lower()}: {message}\n")
        log.critical("start-up failed: {message}", message=message)
        if self.reactor.running:
            self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            self.reactor.stop()
        self.started.errback(failure)

    def start_loop(self, fn, interval_s, now=True):
        def guarded():
            try:
                result = fn()
            except Exception:
                log.failure("periodic {name} failed", name=fn.__name__)
                return None
            if isinstance(result, defer.Deferred):
                result.addErrback(lambda f: log.failure("periodic {name} failed", f, name=fn.__name__))
            return None

        loop = task.LoopingCall(guarded)
        loop.clock = self.clock
        loop.start(interval_s, now=now)
        self._loops.append(loop)
        return loop

    @defer.inlineCallbacks
    def stopService(self):
        self._stopping = True
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        for protocol in list(self.sessions.values()):
            protocol.close("node shutting down")
        if self.listening_port is not None:
            yield self.listening_port.stopListening()
        if self.addrbook is not None:
            yield self.save_state()
            yield self.close_state()
            yield self.addr_db.close()
        log.info("stopped; state saved")

    @defer.inlineCallbacks
    def save_state(self):
        if self.addrbook is not None and not self.addr_db.closed:
            yield self.addrbook.dump(self.addr_db)
            self._write_json("status.json", self.status())

    def status(self):
        """A summary for operators and tests, also written to status.json."""
        sessions = [p for p in self.sessions.values() if p.ready]
        outbound = [p for p in sessions if p.factory.initiator]
        return {
            "node_id": self.node_id.hex(),
            "sessions": len(sessions),
            "inbound": len(sessions) - len(outbound),
            "outbound_peers": sum(1 for p in outbound if not p.remote.roles & Role.TRACKER),
            "outbound_trackers": sum(1 for p in outbound if p.remote.roles & Role.TRACKER),
            "peer_sessions": sum(1 for p in sessions if not p.remote.roles & Role.TRACKER),
            "address_book": len(self.addrbook),
            "advertise": list(self.advertise) if self.advertise else None,
        }

    def load_state(self):
        """Subclass hook: load more state before listening."""
        return defer.succeed(None)

    def close_state(self):
        return defer.succeed(None)

    def on_started(self):
        return defer.succeed(None)

    def maintain(self):
        """Subclass hook, every MAINTAIN_INTERVAL_S."""

    # --- dialling --------------------------------------------------------------------

    def dial(self, host, port, expected_node_id=None, purpose="regular"):
        """Connect over TLS; fires with the ready protocol, or fails."""
        key = (host, port, purpose)
        self.dialling[key] = self.clock.seconds()
        factory = self.make_factory(True, expected_node_id, purpose)
        connecting = self.connect_transport(host, port, factory)
        connecting.addErrback(lambda f: factory.ready.called or factory.ready.errback(f))

        def done(outcome):
            self.dialling.pop(key, None)
            if isinstance(outcome, Failure) and purpose == "regular" and self.addrbook is not None:
                self.addrbook.attempt(host, port)
            return outcome

        return factory.ready.addBoth(done)

    def connect_transport(self, host, port, factory):
        """Open a TLS connection to host:port for ``factory``. The discovery
        simulation replaces this with in-memory transports."""
        cls = endpoints.TCP6ClientEndpoint if ":" in host else endpoints.TCP4ClientEndpoint
        endpoint = cls(self.reactor, host, port, timeout=DIAL_TIMEOUT_S)
        wrapped = self.tls.wrap(factory, is_client=True)
        wrapped.noisy = False
        return endpoint.connect(wrapped)

    def is_dialling(self, host, port, purpose="regular"):
        return (host, port, purpose) in self.dialling

    # --- sessions ------------------------------------------------------------------------

    def session_ready(self, protocol):
        remote = protocol.remote
        factory = protocol.factory
        inbound = not factory.initiator
        if factory.purpose != "regular":
            self._fire_ready(protocol)
            return
        reason = self._refusal(protocol, inbound)
        if reason:
            log.debug("refusing session with {peer}: {reason}", peer=remote.node_id.hex()[:16], reason=reason)
            code = ErrorCode.SHUTDOWN if reason in ("shutting down", "dial-back answered") else ErrorCode.BUSY
            if reason == "discouraged":
                code = ErrorCode.DENIED
            protocol.close(reason, code)
            if factory.ready is not None and not factory.ready.called:
                factory.ready.errback(RemoteError(ErrorCode.SHUTDOWN, reason))
            return
        self.sessions[remote.node_id] = protocol
        if inbound:
            self.inbound.add(protocol)
        else:
            host, port = self._dialled(protocol)
            self.addrbook.good(host, port, node_id=remote.node_id)
        self.on_session_ready(protocol)
        self._fire_ready(protocol)

    def _fire_ready(self, protocol):
        ready = protocol.factory.ready
        if ready is not None and not ready.called:
            ready.callback(protocol)

    def _refusal(self, protocol, inbound):
        remote = protocol.remote
        if self._stopping:
            return "shutting down"
        if remote.node_id in self.sessions:
            return "duplicate session"
        banned_until = self.banned_ids.get(remote.node_id)
        if banned_until is not None and banned_until > self.clock.seconds():
            return "discouraged"
        ip = peer_ip(protocol)
        if inbound and ip and self.addrbook.is_discouraged(ip):
            return "discouraged"
        if inbound and len(self.inbound) >= self.config.max_inbound:
            return "too many inbound connections"
        if len(self.sessions) >= MAX_SESSIONS:
            return "too many sessions"
        return None

    def _dialled(self, protocol):
        peer = protocol.transport.getPeer()
        return peer.host, peer.port

    def session_lost(self, protocol, reason):
        self.misbehaviour.pop(protocol, None)
        self.inbound.discard(protocol)
        ready = protocol.factory.ready
        if ready is not None and not ready.called:
            ready.errback(reason if reason is not None else error.ConnectionLost("closed before the handshake"))
        remote = protocol.remote
        if remote is not None and self.sessions.get(remote.node_id) is protocol:
            del self.sessions[remote.node_id]
            self.on_session_lost(protocol)

    def on_session_ready(self, protocol):
        pass

    def on_session_lost(self, protocol):
        pass

    def message_received(self, protocol, message, request_id):
        if protocol.remote is None or self.sessions.get(protocol.remote.node_id) is not protocol:
            return  # a dial-back or refused session: nothing to serve
        handler = getattr(self, "rx_" + message.TYPE.name.lower(), None)
        if handler is None:
            self.refuse(protocol, request_id, ErrorCode.UNEXPECTED, f"{message.TYPE.name} is not served by this node")
            self.misbehaved(protocol, _Violation(ErrorCode.UNEXPECTED))
            return
        try:
            handler(protocol, message, request_id)
        except Exception:
            log.failure("handling {type} from {peer}", type=message.TYPE.name, peer=protocol.remote.node_id.hex()[:16])
            self.refuse(protocol, request_id, ErrorCode.INTERNAL, "internal error")

    def refuse(self, protocol, request_id, code, text):
        if request_id and protocol.ready:
            protocol.send(m.Error(code=int(code), ref_request_id=request_id, text=text[:200]), response_to=request_id)

    def misbehaved(self, protocol, err):
        """Score the remote; at the limit (or on a fatal error) discourage and drop it."""
        code = getattr(err, "code", ErrorCode.UNSPECIFIED)
        fatal = getattr(err, "fatal", False)
        score = self.misbehaviour.get(protocol, 0) + (MISBEHAVIOUR_LIMIT if fatal else MISBEHAVIOUR_SCORES.get(code, 10))
        self.misbehaviour[protocol] = score
        if score < MISBEHAVIOUR_LIMIT:
            return
        until = self.clock.seconds() + DISCOURAGE_S
        ip = peer_ip(protocol)
        if ip and self.addrbook is not None and not is_loopback(ip):
            # On loopback every node shares one address: ban by node id only.
            self.addrbook.discourage(ip, until)
        if protocol.remote is not None:
            if len(self.banned_ids) >= ab.MAX_DISCOURAGED:
                self.banned_ids.pop(next(iter(self.banned_ids)))
            self.banned_ids[protocol.remote.node_id] = until
        log.warn("discouraging {peer} ({ip}) for misbehaviour: {error}", peer=_name(protocol), ip=ip,
                 error=getattr(err, "message", repr(err))[:120])
        protocol.disconnect()

    # --- GETADDR / ADDR gossip ---------------------------------------------------------------

    # Seconds between two full GETADDR answers on one session; None: once per
    # session, as Bitcoin does against address harvesting. Trackers, whose job
    # is discovery, answer again after an interval.
    getaddr_interval_s = None

    def rx_getaddr(self, protocol, message, request_id):
        now = self.clock.seconds()
        last = getattr(protocol, "answered_getaddr_at", None)
        if last is not None and (self.getaddr_interval_s is None or now - last < self.getaddr_interval_s):
            entries = ()
        else:
            protocol.answered_getaddr_at = now
            entries = [self._entry(a) for a in self.addrbook.get_addr()]
            entries.extend(self.extra_addresses())
            entries = entries[: m.MAX_ADDR_ENTRIES]
        protocol.send(m.Addr(entries=entries), response_to=request_id)

    def extra_addresses(self):
        """Addresses to add to GETADDR answers besides the address book."""
        return [self.self_entry()] if self.advertise else []

    def self_entry(self):
        host, port = self.advertise
        return m.AddrEntry(int(self.clock.seconds()), host, port, int(self.roles), self.node_id)

    def rx_addr(self, protocol, message, request_id):
        self.learn_addresses(protocol, message.entries, relay=True)

    def learn_addresses(self, protocol, entries, relay):
        source = peer_ip(protocol) or "::"
        addrs = [
            ab.PeerAddress(e.host, e.port, e.roles, e.node_id, e.timestamp)
            for e in entries
            if e.node_id != self.node_id
        ]
        self.addrbook.add(addrs, source=source)
        self.addresses_learned(entries)
        if not relay or len(entries) > ADDR_RELAY_MAX_ENTRIES:
            return
        now = self.clock.seconds()
        fresh = []
        for e in entries:
            if not now - ADDR_FRESH_S <= e.timestamp <= now + ADDR_FRESH_S or e.node_id == self.node_id:
                continue
            last = self.relayed.get((e.host, e.port))
            if last is not None and now - last < ADDR_RELAY_ONCE_S:
                continue  # already relayed: relaying again would only echo around the network
            self.relayed.pop((e.host, e.port), None)
            self.relayed[(e.host, e.port)] = now
            fresh.append(e)
        while len(self.relayed) > MAX_RELAYED_REMEMBERED:
            self.relayed.popitem(last=False)
        if not fresh:
            return
        others = [p for p in self.sessions.values() if p is not protocol and p.ready]
        for target in self.rng.sample(others, min(ADDR_RELAY_FANOUT, len(others))):
            target.send(m.Addr(entries=fresh))

    def addresses_learned(self, entries):
        """Subclass hook (the tracker notes other trackers)."""

    def ask_addresses(self, protocol):
        d = protocol.request(m.GetAddr(), timeout_s=30)
        d.addCallback(lambda addr: self.learn_addresses(protocol, addr.entries, relay=False))
        d.addErrback(lambda f: f.trap(RemoteError, RequestTimeout, error.ConnectionLost, error.ConnectionDone))
        return d

    def advertise_self(self, protocol):
        if self.advertise and protocol.ready:
            protocol.send(m.Addr(entries=(self.self_entry(),)))

    def _entry(self, addr):
        return m.AddrEntry(max(0, int(addr.timestamp)), addr.ip, addr.port, addr.roles & 0xFF, addr.node_id)


class _Violation:
    fatal = False

    def __init__(self, code):
        self.code = code
        self.message = ErrorCode(code).name.lower()


def is_loopback(ip):
    return ip.startswith("127.") or ip == "::1"


def _name(protocol):
    remote = protocol.remote
    return remote.node_id.hex()[:16] if remote is not None else "?"
