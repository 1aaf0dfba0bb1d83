# -*- test-case-name: tests.test_network -*-
"""
The tracker core: the registry of live peers, trackers and functions,
federation with the other trackers, reachability dial-back, liveness by
PING, and the HTTP analytics side.

Federation. Trackers dial every tracker they hear of (configured with
--join, announced in ADDR with the tracker role, or present in the
registry), up to MAX_TRACKER_LINKS. On every new tracker session each side
sends SYNC(digest) and applies the DELTA it gets back (anti-entropy), so a
partition heals on reconnect. Afterwards every registry change is pushed
at once as an unsolicited DELTA to every tracker session; a gap in an
origin's sequence numbers triggers another SYNC, and a SYNC runs every
ANTI_ENTROPY_INTERVAL_S anyway.

Homing. A peer ANNOUNCEs to one tracker, its primary; that tracker upserts
it as home. When the primary dies the peer announces to another tracker,
which becomes its home; the dead tracker's peers that do not re-home
expire at the others after the registry's tracker TTL.
"""

import os

import attrs
from twisted.internet import defer, endpoints, error
from twisted.logger import Logger
from twisted.web.server import Site

from orb._db import Database
from orb.node import Node, NodeConfig, StartupError
from orb.protocol import fid
from orb.protocol import messages as m
from orb.net.adapter import RemoteError, RequestTimeout
from orb.protocol.codes import ErrorCode, Feature, Role
from orb.tracker import registry as reg
from orb.tracker.http import build_resource
from orb.tracker.stats import Stats

log = Logger()

REGISTRY_FILE = "registry.sqlite"
MAX_TRACKER_LINKS = 16
PING_INTERVAL_S = 10.0
EXPIRE_INTERVAL_S = 5.0
PUSH_INTERVAL_S = 0.2
ANTI_ENTROPY_INTERVAL_S = 30.0
MAX_PENDING_PUSH = 2000
MAX_REACHABILITY_CACHE = 10_000
RETRY_BASE_S = 1.0
RETRY_MAX_S = 30.0
MAX_GETADDR_PEERS = 500
DEPARTED_GRACE_S = 15.0  # a home peer whose session dropped is removed after this, unless it is back


@attrs.frozen
class TrackerConfig:
    node: NodeConfig
    http: str = "tcp:7480:interface=127.0.0.1"
    peer_ttl_s: float = reg.DEFAULT_PEER_TTL_S


class Tracker(Node):
    roles = Role.TRACKER | Role.RELAY
    getaddr_interval_s = 10.0

    def __init__(self, config, reactor, key=None, rng=None):
        super().__init__(config.node, reactor, key, rng)
        self.tracker_config = config
        self.stats = Stats(reactor)
        self.registry = None
        self.http_port = None
        self.reachability = {}  # peer id -> "reachable" | "relayed", from dial-back
        self._pending_push = []
        self._push_overflow = False
        self._retry = {}  # (host, port) -> (next try at, delay)
        self._link_ids = {}  # (host, port) dialled -> tracker node id

    # --- state ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def load_state(self):
        path = os.path.join(self.config.data_dir, REGISTRY_FILE)
        self.registry_db = yield Database.open(self.reactor, path, reg.MIGRATIONS)
        self.registry = yield reg.Registry.load(
            self.registry_db, self.clock, self.node_id, peer_ttl_s=self.tracker_config.peer_ttl_s
        )
        self.registry.subscribe(self._queue_push)

    @defer.inlineCallbacks
    def save_state(self):
        yield super().save_state()
        if self.registry is not None and not self.registry_db.closed:
            yield self.registry.save(self.registry_db)

    @defer.inlineCallbacks
    def close_state(self):
        yield self.registry_db.close()
        if self.http_port is not None:
            yield self.http_port.stopListening()

    @defer.inlineCallbacks
    def on_started(self):
        self.registry.upsert_tracker(self.node_id, [self.advertise] if self.advertise else [])
        if self.tracker_config.http:
            try:
                endpoint = endpoints.serverFromString(self.reactor, self.tracker_config.http)
                site = Site(build_resource(self.registry, self.stats))
                site.noisy = False
                self.http_port = yield endpoint.listen(site)
            except error.CannotListenError as e:
                raise StartupError(f"cannot listen on {self.tracker_config.http}: {e.socketError}") from None
            address = self.http_port.getHost()
            log.info("HTTP API and dashboard on http://{host}:{port}/", host=address.host, port=address.port)
        self.start_loop(self.ping_peers, PING_INTERVAL_S)
        self.start_loop(self.expire, EXPIRE_INTERVAL_S, now=False)
        self.start_loop(self.push_changes, PUSH_INTERVAL_S, now=False)
        self.start_loop(self.anti_entropy, ANTI_ENTROPY_INTERVAL_S, now=False)

    def ports(self):
        ports = super().ports()
        if self.http_port is not None:
            ports["http"] = self.http_port.getHost().port
        return ports

    def count_frame(self, direction, message_type):
        self.stats.count_message("in" if direction == "rx" else "out", message_type.name)

    # --- sessions -----------------------------------------------------------------------

    def on_session_ready(self, protocol):
        remote = protocol.remote
        if remote.roles & Role.TRACKER:
            addresses = [(e.host, e.port) for e in remote.listen]
            self.registry.upsert_tracker(remote.node_id, addresses)
            self.registry.set_tracker_connected(remote.node_id, True)
            if protocol.factory.initiator:
                self._link_ids[self._dialled(protocol)] = remote.node_id
            if remote.features & Feature.FEDERATION:
                self.sync_with(protocol)
            log.info("tracker {peer} linked", peer=remote.node_id.hex()[:16])
        else:
            self.registry.touch(remote.node_id)
            protocol.ping()  # a first RTT for the registry
            self.dial_back(protocol)
        self.advertise_self(protocol)
        if protocol.factory.initiator:
            self.ask_addresses(protocol)

    def on_session_lost(self, protocol):
        remote = protocol.remote
        if remote.roles & Role.TRACKER:
            self.registry.set_tracker_connected(remote.node_id, False)
            log.info("tracker {peer} unlinked", peer=remote.node_id.hex()[:16])
        elif not self._stopping:
            # Do not wait for the TTL: a departed peer would be routed to for 90 s.
            self.clock.callLater(DEPARTED_GRACE_S, self._check_departed, remote.node_id)

    def _check_departed(self, node_id):
        if self._stopping or node_id in self.sessions:
            return
        peer = self.registry.peer(node_id)
        if peer is not None and peer.home == self.node_id:
            self.registry.remove_peer(node_id, "disconnected")

    def extra_addresses(self):
        """GETADDR answers carry us, the other trackers and the registry's reachable peers."""
        now = int(self.clock.seconds())
        entries = super().extra_addresses() + self._tracker_entries()
        peers = [p for p in self.registry.peers() if p.reachability == "reachable" and p.addresses]
        for peer in self.rng.sample(peers, min(MAX_GETADDR_PEERS, len(peers))):
            host, port = peer.addresses[0]
            entries.append(m.AddrEntry(now, host, port, peer.roles & 0xFF or int(Role.PEER), peer.node_id))
        return entries

    def _tracker_entries(self, exclude=None, limit=MAX_TRACKER_LINKS):
        """ADDR entries for the other trackers the registry knows (first address each)."""
        now = int(self.clock.seconds())
        roles = int(Role.TRACKER | Role.RELAY)
        others = [t for t in self.registry.trackers() if t.node_id not in (self.node_id, exclude) and t.addresses]
        return [m.AddrEntry(now, *t.addresses[0], roles, t.node_id) for t in others[:limit]]

    def advertise_self(self, protocol):
        """Tell a new session about us and the trackers we know."""
        if not protocol.ready:
            return
        entries = [self.self_entry()] if self.advertise else []
        entries += self._tracker_entries(exclude=protocol.remote.node_id, limit=8)
        if entries:
            protocol.send(m.Addr(entries=entries))

    # --- peers: announce, liveness, reachability -----------------------------------------

    def rx_announce(self, protocol, message, request_id):
        remote = protocol.remote
        if remote.roles & Role.TRACKER:
            return
        functions = {}
        for entry in message.functions[: reg.MAX_FUNCTIONS_PER_PEER]:
            try:
                functions[fid.to_text(entry.fid)] = entry.version
            except fid.FidError:
                self.misbehaved(protocol, _Bad(f"ANNOUNCE with an invalid fid {entry.fid.hex()[:16]}"))
                return
        self.registry.upsert_peer(
            remote.node_id,
            addresses=[(e.host, e.port) for e in remote.listen][: reg.MAX_ADDRESSES],
            reachability=self.reachability.get(remote.node_id, "unknown"),
            rtt_ms=protocol.rtt_ms,
            load=min(message.load_permille, 1000) / 1000.0,
            functions=functions,
            roles=remote.roles,
        )

    def ping_peers(self):
        for node_id, protocol in list(self.sessions.items()):
            if not protocol.ready:
                continue
            if protocol.remote.roles & Role.TRACKER:
                self.registry.touch_tracker(node_id)
            else:
                self.registry.touch(node_id)
            protocol.ping()

    def rtt_measured(self, protocol, rtt_ms):
        remote = protocol.remote
        if remote is None or self.sessions.get(remote.node_id) is not protocol or remote.roles & Role.TRACKER:
            return
        self.stats.observe_rtt_ms(rtt_ms)
        self.registry.touch(remote.node_id)
        peer = self.registry.peer(remote.node_id)
        if peer is not None and peer.home == self.node_id:
            self.registry.record_rtt(remote.node_id, rtt_ms)

    def expire(self):
        for change in self.registry.expire():
            log.info("peer {peer} expired ({reason})", peer=change.ident[:16] if change.ident else "?",
                     reason=change.reason)

    def dial_back(self, protocol):
        """Find out whether the peer accepts connections at the address it advertises."""
        remote = protocol.remote
        if not remote.listen:
            self._set_reachability(remote.node_id, "relayed")
            return
        target = remote.listen[0]
        d = self.dial(target.host, target.port, expected_node_id=remote.node_id, purpose="dialback")

        def reached(dialback):
            dialback.close("dial-back done")
            self._set_reachability(remote.node_id, "reachable")

        def unreachable(failure):
            log.info("peer {peer} is not reachable at {host}:{port}; it will be relayed",
                     peer=remote.node_id.hex()[:16], host=target.host, port=target.port)
            self._set_reachability(remote.node_id, "relayed")

        d.addCallbacks(reached, unreachable)

    def _set_reachability(self, node_id, state):
        if len(self.reachability) >= MAX_REACHABILITY_CACHE:
            self.reachability.pop(next(iter(self.reachability)))
        self.reachability[node_id] = state
        peer = self.registry.peer(node_id)
        if peer is not None and peer.home == self.node_id and peer.reachability != state:
            self.registry.update_peer(node_id, reachability=state)

    # --- federation -----------------------------------------------------------------------

    def _tracker_sessions(self):
        return [
            p for p in self.sessions.values()
            if p.ready and p.remote.roles & Role.TRACKER and p.remote.features & Feature.FEDERATION
        ]

    def maintain(self):
        """Keep a link to every tracker we know of, up to MAX_TRACKER_LINKS."""
        linked = {p.remote.node_id for p in self._tracker_sessions()}
        if len(linked) >= MAX_TRACKER_LINKS:
            return
        now = self.clock.seconds()
        candidates = list(self.config.bootstrap)
        for tracker in self.registry.trackers():
            if tracker.node_id != self.node_id and tracker.node_id not in linked:
                candidates.extend(tracker.addresses[:1])
        own = {self.advertise, self._listen_address()}
        for host, port in candidates:
            address = (host, port)
            if address in own or self.is_dialling(host, port):
                continue
            if self._link_ids.get(address) in linked:
                continue
            next_try, delay = self._retry.get(address, (0.0, RETRY_BASE_S))
            if now < next_try:
                continue
            self._retry[address] = (now + delay, min(delay * 2, RETRY_MAX_S))
            d = self.dial(host, port)
            d.addCallbacks(lambda p, a=address: self._retry.pop(a, None), lambda f: None)

    def sync_with(self, protocol):
        if getattr(protocol, "syncing", False) or not protocol.ready:
            return
        protocol.syncing = True
        d = protocol.request(m.Sync(digest=self.registry.digest().to_bytes()), timeout_s=30)

        def done(result):
            protocol.syncing = False
            return result

        d.addBoth(done)
        d.addCallback(lambda delta: self.apply_delta(protocol, delta))
        d.addErrback(lambda f: f.trap(RemoteError, RequestTimeout, error.ConnectionLost, error.ConnectionDone))

    def anti_entropy(self):
        for protocol in self._tracker_sessions():
            self.sync_with(protocol)

    def rx_sync(self, protocol, message, request_id):
        if not protocol.remote.roles & Role.TRACKER:
            self.refuse(protocol, request_id, ErrorCode.DENIED, "SYNC is for trackers")
            return
        try:
            digest = reg.Digest.from_bytes(message.digest)
        except reg.RegistryChangeError as e:
            self.refuse(protocol, request_id, ErrorCode.MALFORMED, f"bad digest: {e}")
            self.misbehaved(protocol, _Bad(e))
            return
        answer = self.registry.delta_since(digest)
        if isinstance(answer, reg.Snapshot):
            parts = self.registry.snapshot_parts()
            for part in parts[:-1]:
                protocol.send(m.Delta(kind=int(m.DeltaKind.SNAPSHOT), payload=part.to_bytes()))
            protocol.send(m.Delta(kind=int(m.DeltaKind.SNAPSHOT), payload=parts[-1].to_bytes()), response_to=request_id)
        else:
            protocol.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=answer.to_bytes()), response_to=request_id)

    def rx_delta(self, protocol, message, request_id):
        if not protocol.remote.roles & Role.TRACKER:
            self.misbehaved(protocol, _Bad("DELTA from a non-tracker"))
            return
        self.apply_delta(protocol, message)

    def apply_delta(self, protocol, message):
        try:
            if message.kind == m.DeltaKind.SNAPSHOT:
                self.registry.apply_snapshot(reg.Snapshot.from_bytes(message.payload))
                return
            delta = reg.Delta.from_bytes(message.payload)
        except reg.RegistryChangeError as e:
            log.warn("bad DELTA from {peer}: {error}", peer=protocol.remote.node_id.hex()[:16], error=str(e)[:120])
            self.misbehaved(protocol, _Bad(e))
            return
        gap = False
        for change in delta.changes:
            if self.registry.apply_remote(change) is reg.ApplyResult.GAP:
                gap = True
        if gap or delta.more:
            self.reactor.callLater(0, self.sync_with, protocol)

    def _queue_push(self, change):
        if len(self._pending_push) >= MAX_PENDING_PUSH:
            self._push_overflow = True  # anti-entropy will carry the rest
            return
        self._pending_push.append(change)

    def push_changes(self):
        if self._push_overflow:
            self._push_overflow = False
            self._pending_push.clear()
            self.anti_entropy()
            return
        if not self._pending_push:
            return
        changes, self._pending_push = self._pending_push, []
        sessions = self._tracker_sessions()
        if not sessions:
            return
        payload = reg.Delta(changes=tuple(changes), more=False).to_bytes()
        if len(payload) > m.MAX_REGISTRY_JSON_BYTES:
            self.anti_entropy()
            return
        for protocol in sessions:
            protocol.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=payload))


class _Bad:
    """A federation violation worth the full misbehaviour score."""

    fatal = True
    code = ErrorCode.MALFORMED

    def __init__(self, what):
        self.message = str(what)
