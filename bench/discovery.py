"""
Discovery simulation: many peers and trackers in one process, running the
real ORB code (Session, OrbProtocol, the session table and the Peer and
Tracker cores as their wiring builds them, the codec, the
address books and registries) over in-memory transports on a simulated
clock. No sockets, no TLS, no SQLite.

    .venv/bin/python bench/discovery.py [--peers 1000 --trackers 10 --seed 1] [--quick]

Phases, all on one simulated clock:

1. bootstrap: every node starts within the first second (a random phase
   each), peers knowing one tracker each; run until every peer has at least
   8 live outbound peer sessions and every tracker's registry holds every
   peer;
2. steady state: frames and bytes per peer per minute;
3. churn: each minute 10% of the peers leave (their transports drop) and as
   many new ones join through one tracker; connectivity, registry accuracy
   and the message rate;
4. eclipse: an attacker owning one /16 (every address in it answers) floods
   victims with ADDR through up to 100 inbound sessions each, paced to the
   victims' token bucket, and answers their GETADDR with 1000 of its own
   addresses; each victim's outbound peer sessions are then dropped and
   refilled by ``maintain``. Victims run the real rules, the real book
   without the one-outbound-per-group rule, or a naive flat book without
   that rule.

Figures go to stdout and to bench/out/discovery.json. What is modelled:
per-link one-way latency drawn uniformly in [5, 50] ms, fixed per link;
a connection takes one round trip; a dial to a missing address fails after
DIAL_TIMEOUT_S; a departing node's connections are seen closed by the remote
after the link latency. Bytes are ORB frame bytes (header included), not
TLS records or TCP/IP headers.
"""

import argparse
import collections
import heapq
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import base, defer, error
from twisted.internet.address import IPv4Address
from twisted.logger import Logger, LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure

from orb.identity import NodeKey
from orb.net import addrbook as ab
from orb.net.config import NodeConfig
from orb.net.sessions import DIAL_TIMEOUT_S
from orb.peer.wiring import Peer, PeerConfig
from orb.protocol import messages as m
from orb.protocol.messages import MessageType
from orb.protocol.codes import Role
from orb.protocol.frame import FrameDecoder, encode_frame, network_magic
from orb.tracker import registry as reg
from orb.tracker.wiring import Tracker, TrackerConfig

log = Logger()

PORT = 7400
OUTBOUND_PEERS = 8
PEER_GROUPS = 240  # honest peers live in 10.0/16 .. 10.239/16
TRACKER_FIRST_OCTET2 = 240  # trackers at 10.240.0.1, 10.241.0.1, ...
ATTACKER_PREFIX = "10.250."  # the attacker's /16
ATTACKER_ADDRESSES = 4096  # live attacker addresses it advertises
ATTACKER_SESSIONS = 100  # inbound sessions it holds to each victim
ADDR_RATE_PER_S = 0.1  # the victims' token bucket (SessionConfig defaults)
EPOCH_S = 1_764_000_000.0  # the simulated clock starts here (Nov 2025), not at 0: see SimClock
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


# --- a simulated clock with a heap ------------------------------------------------


class SimClock:
    """``task.Clock``'s interface (IReactorTime plus ``advance``) on a heap.

    ``task.Clock`` re-sorts its whole list on every ``callLater``, which is
    quadratic with the ~10^5 pending calls of a 1,000-node network. Unlike
    ``task.Clock.advance``, a call runs with ``seconds()`` at its own time.
    Cancelled calls stay in the heap and are skipped when they come up.

    Time starts at a realistic epoch, not 0: the address book ages relayed
    timestamps by two hours and calls a timestamp of 0 terrible, so at t=0
    every gossiped address would be dropped.
    """

    def __init__(self, start_s=EPOCH_S):
        self.rightNow = start_s
        self._heap = []
        self._seq = itertools.count()
        self.failures = 0

    def seconds(self):
        return self.rightNow

    def callLater(self, delay, fn, *args, **kw):
        dc = base.DelayedCall(self.rightNow + max(0.0, delay), fn, args, kw, _ignore, self._push, self.seconds)
        heapq.heappush(self._heap, (dc.time, next(self._seq), dc))
        return dc

    def _push(self, dc):
        heapq.heappush(self._heap, (dc.time, next(self._seq), dc))

    def getDelayedCalls(self):
        return [dc for _, _, dc in self._heap if not (dc.cancelled or dc.called)]

    def advance(self, amount):
        self.run_until(self.rightNow + amount)

    def run_until(self, until):
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= until:
            when, _, dc = pop(heap)
            if dc.cancelled or dc.called or when != dc.time:
                continue
            if dc.delayed_time:
                dc.activate_delay()
                self._push(dc)
                continue
            self.rightNow = max(self.rightNow, when)
            dc.called = 1
            try:
                dc.func(*dc.args, **dc.kw)
            except Exception:  # noqa: BLE001 - as the reactor does: log and go on
                self.failures += 1
                log.failure("simulated call {fn!r} failed", fn=dc.func)
        self.rightNow = max(self.rightNow, until)

    @property
    def pending(self):
        return len(self._heap)


def _ignore(dc):
    pass


# --- in-memory transports -----------------------------------------------------------


class SimTransport:
    """One end of an in-memory TCP connection. ``write`` delivers to the
    other end after the link latency; closing is seen at once here and after
    the latency there. Writes after ``loseConnection`` are dropped."""

    def __init__(self, net, owner, host, peer, latency_s):
        self.net = net
        self.owner = owner
        self._host = host
        self._peer = peer
        self.latency_s = latency_s
        self.protocol = None
        self.other = None
        self.connected = True
        self.disconnecting = False

    def getHost(self):
        return self._host

    def getPeer(self):
        return self._peer

    def write(self, data):
        if self.disconnecting or not data:
            return
        self.net.count_bytes(self.owner, "tx", len(data))
        self.net.clock.callLater(self.latency_s, self.other._receive, data)

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def _receive(self, data):
        if self.disconnecting:
            return
        self.net.count_bytes(self.owner, "rx", len(data))
        self.protocol.dataReceived(data)

    def loseConnection(self, reason=None):
        self._close(error.ConnectionDone("closed"), error.ConnectionDone("closed by the remote"))

    def abortConnection(self):
        self._close(error.ConnectionAborted("aborted"), error.ConnectionLost("reset by the remote"))

    def drop(self):
        """The owner vanished: the remote sees the connection lost."""
        self._close(error.ConnectionLost("node left"), error.ConnectionLost("remote node left"))

    def _close(self, here, there):
        if self.disconnecting:
            return
        self.disconnecting = True
        clock = self.net.clock
        clock.callLater(0, self._lost, here)
        clock.callLater(self.latency_s, self.other._lost, there)

    def _lost(self, exc):
        if not self.connected:
            return
        self.connected = False
        self.disconnecting = True
        self.owner.sim_transports.discard(self)
        self.protocol.connectionLost(Failure(exc))

    # Twisted's ITCPTransport bits nobody here needs, for completeness.
    def setTcpNoDelay(self, enabled):
        pass

    def setTcpKeepAlive(self, enabled):
        pass


class Net:
    """Who listens where, the links between them, and the counters."""

    def __init__(self, clock, rng, min_latency_ms=5.0, max_latency_ms=50.0):
        self.clock = clock
        self.rng = rng
        self.min_latency_s = min_latency_ms / 1000.0
        self.max_latency_s = max_latency_ms / 1000.0
        self.listeners = {}  # (host, port) -> listening node
        self.resolver = None  # (host, port) -> node or None, for addresses nobody listens on yet
        self._latency = {}
        self._ports = itertools.count(40000)
        self.frames = collections.Counter()  # (kind, direction) -> frames
        self.frame_types = collections.Counter()  # (kind, direction, type name) -> frames
        self.bytes = collections.Counter()  # (kind, direction) -> bytes
        self.dials = collections.Counter()  # outcome -> count

    def latency(self, a, b):
        key = (a, b) if a < b else (b, a)
        found = self._latency.get(key)
        if found is None:
            found = self._latency[key] = self.rng.uniform(self.min_latency_s, self.max_latency_s)
        return found

    def count_frame(self, node, direction, message_type):
        self.frames[node.kind, direction] += 1
        self.frame_types[node.kind, direction, message_type.name] += 1

    def count_bytes(self, node, direction, n):
        self.bytes[node.kind, direction] += n

    def counters(self):
        return collections.Counter(self.frames), collections.Counter(self.bytes), collections.Counter(self.frame_types)

    def listen(self, node):
        self.listeners[(node.host, node.port)] = node

    def connect(self, dialer, host, port, factory):
        d = defer.Deferred()
        target = self.listeners.get((host, port))
        if target is None and self.resolver is not None:
            target = self.resolver(host, port)
        if target is None or not target.alive:
            self.dials["timeout"] += 1
            self.clock.callLater(DIAL_TIMEOUT_S, d.errback, error.TimeoutError(string=f"{host}:{port}"))
            return d
        latency_s = self.latency(dialer.host, host)
        self.clock.callLater(2 * latency_s, self._established, dialer, target, host, port, factory, d, latency_s)
        return d

    def _established(self, dialer, target, host, port, factory, d, latency_s):
        if not dialer.alive:
            d.errback(error.ConnectionAborted("dialler left"))
            return
        if not target.alive or self.listeners.get((host, port)) is not target:
            self.dials["timeout"] += 1
            self.clock.callLater(DIAL_TIMEOUT_S - 2 * latency_s, d.errback, error.TimeoutError(string=f"{host}:{port}"))
            return
        self.dials["connected"] += 1
        ephemeral = next(self._ports) % 25000 + 40000
        client = SimTransport(self, dialer, IPv4Address("TCP", dialer.host, ephemeral), IPv4Address("TCP", host, port),
                              latency_s)
        server = SimTransport(self, target, IPv4Address("TCP", host, port), IPv4Address("TCP", dialer.host, ephemeral),
                              latency_s)
        client.other, server.other = server, client
        client.protocol = factory.buildProtocol(client.getPeer())
        server.protocol = target.core.table.factory().buildProtocol(server.getPeer())
        dialer.sim_transports.add(client)
        target.sim_transports.add(server)
        server.protocol.makeConnection(server)
        client.protocol.makeConnection(client)
        d.callback(client.protocol)


# --- the nodes: the real cores, with an in-memory connector ----------------------------


class SimNode:
    """A real Tracker or Peer core at a simulated address. The core is built
    by its own wiring (orb.tracker.wiring / orb.peer.wiring) and started with
    its own ``start()``; the simulation only supplies the connector (in-memory
    transports instead of TLS over TCP) and counts frames."""

    def __init__(self, net, host, core):
        self.net = net
        self.host = host
        self.port = PORT
        self.core = core
        self.kind = core.kind
        self.alive = False
        self.started_at = None
        self.sim_transports = set()
        counter = core.table.frame_counter

        def count(direction, message_type, size_bytes):
            if counter is not None:
                counter(direction, message_type, size_bytes)
            net.count_frame(self, direction, message_type)

        core.table.frame_counter = count

    @property
    def node_id(self):
        return self.core.node_id

    @property
    def addrbook(self):
        return self.core.addrbook

    def outbound_peers(self):
        return self.core.table.outbound(trackers=False)

    def sim_start(self):
        self.alive = True
        self.started_at = self.net.clock.seconds()
        self.core.local.listening = (self.host, self.port)
        self.net.listen(self)
        self.core.start()

    def sim_kill(self):
        """The node vanishes: no goodbye, its connections drop."""
        self.alive = False
        self.core.table.stopping = True
        self.core.periodic.stop()
        if self.kind == "peer":
            self.core.connections.stop()
        if self.net.listeners.get((self.host, self.port)) is self:
            del self.net.listeners[(self.host, self.port)]
        for transport in list(self.sim_transports):
            transport.drop()

    def use_addrbook(self, book):
        """Swap the address book every component of the core reads."""
        core = self.core
        core.addrbook = core.table.addrbook = core.gossip.addrbook = book
        if self.kind == "peer":
            core.connections.addrbook = book


class SimConnector:
    def __init__(self, net, node_ref):
        self.net = net
        self.node_ref = node_ref  # filled once the SimNode exists

    def connect(self, host, port, factory):
        return self.net.connect(self.node_ref[0], host, port, factory)


def seeded_key(rng):
    return NodeKey(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))


def sim_book(clock, rng):
    return ab.AddressBook(clock, key=rng.randbytes(32), rng=random.Random(rng.getrandbits(64)),
                          allow_loopback=True, allow_private=True, group_fn=ab.prefix_group)


# --- the naive baseline address book --------------------------------------------------


class NaiveBook:
    """One flat table, uniform choice: no groups, no buckets, no source
    limits, no test-before-evict. Random eviction when full. The baseline
    the eclipse figure is compared with."""

    def __init__(self, clock, rng, capacity=ab.MAX_ENTRIES):
        self._clock = clock
        self._rng = rng
        self.capacity = capacity
        self._addrs = {}  # endpoint -> PeerAddress
        self._failures = collections.Counter()
        self._discouraged = {}

    def __len__(self):
        return len(self._addrs)

    def addresses(self):
        return list(self._addrs.values())

    def add(self, addrs, source, now=None):
        added = 0
        for raw in list(addrs)[: ab.MAX_ADDR_PER_MESSAGE]:
            try:
                addr = ab.check_address(raw)
            except ab.AddressError:
                continue
            if addr.endpoint in self._addrs:
                continue
            if len(self._addrs) >= self.capacity:
                del self._addrs[self._rng.choice(list(self._addrs))]
            self._addrs[addr.endpoint] = addr
            added += 1
        return added

    def good(self, ip, port, now=None, node_id=None):
        self._failures.pop((ip, port), None)
        return True

    def attempt(self, ip, port, count_failure=True, now=None):
        self._failures[(ip, port)] += 1

    def select(self, new_only=False, now=None):
        if not self._addrs:
            return None
        keys = list(self._addrs)
        for _ in range(64):
            endpoint = self._rng.choice(keys)
            if self._failures[endpoint] < ab.RETRIES and not self.is_discouraged(endpoint[0]):
                return self._addrs[endpoint]
        return None

    def get_addr(self, max_count=ab.MAX_ADDR_PER_MESSAGE, max_pct=ab.GETADDR_MAX_PCT, now=None):
        keys = list(self._addrs)
        self._rng.shuffle(keys)
        n = min(max_count, -(-len(keys) * max_pct // 100))
        return [self._addrs[k] for k in keys[:n]]

    def discourage(self, ip, until_s):
        self._discouraged[ip] = until_s

    def resolve_collisions(self, now=None):
        pass  # no tried table, no collisions

    def select_tried_collision(self, now=None):
        return None

    def is_discouraged(self, ip, now=None):
        until = self._discouraged.get(ip)
        return until is not None and self._clock.seconds() < until


# --- the attacker -------------------------------------------------------------------------


class Attacker:
    """Owns 10.250.0.0/16; every one of its ATTACKER_ADDRESSES answers (a node
    is made on the first dial)."""

    def __init__(self, sim, rng):
        self.sim = sim
        self.rng = rng
        self.hosts = [f"{ATTACKER_PREFIX}{i // 250}.{i % 250 + 1}" for i in range(ATTACKER_ADDRESSES)]
        self.keys = {h: seeded_key(rng) for h in self.hosts}
        self.ids = {h: k.node_id for h, k in self.keys.items()}
        self.node_ids = set(self.ids.values())
        self.nodes = {}
        self.floods = []

    def entries(self, n):
        now = int(self.sim.clock.seconds())
        hosts = self.rng.sample(self.hosts, min(n, len(self.hosts)))
        return tuple(m.AddrEntry(now, h, PORT, int(Role.PEER), self.ids[h]) for h in hosts)

    def resolve(self, host, port):
        if port != PORT or host not in self.keys:
            return None
        return self.node(host)

    def node(self, host):
        node = self.nodes.get(host)
        if node is None:
            node = self.sim.make_peer(host, (), key=self.keys[host], max_inbound=10_000)
            node.kind = "attacker"
            node.core.table.handlers[MessageType.GETADDR] = self._answer_getaddr
            node.alive = True
            node.started_at = self.sim.clock.seconds()
            self.sim.net.listen(node)
            self.nodes[host] = node
        return node

    def _answer_getaddr(self, record, message, request_id):
        """Every GETADDR gets 1000 attacker addresses."""
        record.send(m.Addr(entries=self.entries(m.MAX_ADDR_ENTRIES)), response_to=request_id)

    def flood(self, victim, sessions):
        """Open ``sessions`` inbound sessions to ``victim`` from distinct
        attacker addresses and send ADDR on each as fast as its token bucket
        refills (1 entry at once, then ADDR_RATE_PER_S), so nothing is
        throttled and no misbehaviour is scored."""
        for host in self.rng.sample(self.hosts, sessions):
            node = self.node(host)
            d = node.core.table.dial(victim.host, victim.port, expected_node_id=victim.node_id)
            d.addCallbacks(self._pace, lambda f: None)

    def _pace(self, protocol, tokens=1.0):
        if not protocol.ready:
            return
        n = int(tokens)
        if n:
            protocol.send(m.Addr(entries=self.entries(n)))
        interval_s = 10.0
        self.sim.clock.callLater(interval_s, self._pace, protocol, tokens - n + interval_s * ADDR_RATE_PER_S)


# --- the simulation -------------------------------------------------------------------------


class Simulation:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.clock = SimClock()
        self.net = Net(self.clock, random.Random(self.rng.getrandbits(64)), args.min_latency_ms, args.max_latency_ms)
        self.data_dir = tempfile.mkdtemp(prefix="orb-discovery-")
        self.trackers = []
        self.peers = []  # every honest peer ever made; .alive tells
        self._hosts = set()
        weights = [1.0 / (i + 1) ** 0.7 for i in range(PEER_GROUPS)]  # a few big /16s, a long tail
        self._group_weights = list(itertools.accumulate(weights))
        self.attacker = None

    # --- building ---

    def new_host(self):
        while True:
            g = self.rng.choices(range(PEER_GROUPS), cum_weights=self._group_weights)[0]
            host = f"10.{g}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
            if host not in self._hosts:
                self._hosts.add(host)
                return host

    def make_peer(self, host, bootstrap, key=None, max_inbound=117):
        config = PeerConfig(
            NodeConfig(self.data_dir, advertise=(host, PORT), bootstrap=tuple(bootstrap), max_inbound=max_inbound),
            outbound_peers=OUTBOUND_PEERS, group_fn=ab.prefix_group,
        )
        rng = random.Random(self.rng.getrandbits(64))
        ref = []
        core = Peer(config, self.clock, key or seeded_key(rng), rng, addrbook=sim_book(self.clock, rng),
                    connector=SimConnector(self.net, ref), tls_binding=False)
        ref.append(SimNode(self.net, host, core))
        return ref[0]

    def make_tracker(self, i):
        host = f"10.{TRACKER_FIRST_OCTET2 + i}.0.1"
        join = ((self.trackers[0].host, PORT),) if self.trackers else ()
        config = TrackerConfig(
            NodeConfig(self.data_dir, advertise=(host, PORT), bootstrap=join, max_inbound=self.args.tracker_max_inbound),
            http="",
        )
        rng = random.Random(self.rng.getrandbits(64))
        key = seeded_key(rng)
        ref = []
        core = Tracker(config, self.clock, key, rng, addrbook=sim_book(self.clock, rng),
                       registry=reg.Registry(self.clock, key), connector=SimConnector(self.net, ref),
                       tls_binding=False)
        for other in self.trackers:  # as if each tracker were started with --admit for the others
            other.core.federation.admitted.add(core.node_id)
            core.federation.admitted.add(other.node_id)
        ref.append(SimNode(self.net, host, core))
        return ref[0]

    def start_later(self, node, within_s):
        self.clock.callLater(self.rng.uniform(0, within_s), node.sim_start)

    def add_peer(self, within_s=1.0):
        tracker = self.rng.choice(self.trackers)
        peer = self.make_peer(self.new_host(), [(tracker.host, PORT)])
        self.peers.append(peer)
        self.start_later(peer, within_s)
        return peer

    # --- observing ---

    def live_peers(self):
        return [p for p in self.peers if p.alive]

    def live_outbound(self, peer, alive_ids):
        return sum(1 for r in peer.outbound_peers() if r.node_id in alive_ids)

    def snapshot(self, min_age_s=0.0):
        """Connectivity and registry accuracy now."""
        now = self.clock.seconds()
        live = self.live_peers()
        alive_ids = {p.node_id for p in live}
        all_alive_ids = alive_ids | {t.node_id for t in self.trackers}
        if self.attacker is not None:
            all_alive_ids |= {n.node_id for n in self.attacker.nodes.values() if n.alive}
        outbound = [self.live_outbound(p, all_alive_ids) for p in live]
        settled = [o for p, o in zip(live, outbound) if now - p.started_at >= min_age_s]
        settled_ids = {p.node_id for p in live if now - p.started_at >= min_age_s}
        known, stale, known_settled = [], [], []
        for t in self.trackers:
            ids = {r.node_id for r in t.core.registry.peers()}
            known.append(len(ids & alive_ids) / max(1, len(alive_ids)))
            known_settled.append(len(ids & settled_ids) / max(1, len(settled_ids)))
            stale.append(len(ids - alive_ids))
        return {
            "t_s": now - EPOCH_S,
            "live_peers": len(live),
            "frac_ge8": sum(o >= OUTBOUND_PEERS for o in outbound) / max(1, len(live)),
            "mean_outbound": statistics.fmean(outbound) if outbound else 0.0,
            "settled_peers": len(settled),
            "frac_ge8_settled": sum(o >= OUTBOUND_PEERS for o in settled) / max(1, len(settled)),
            "registry_known": statistics.fmean(known),
            "registry_known_min": min(known),
            "registry_known_settled": statistics.fmean(known_settled),
            "registry_stale": statistics.fmean(stale),
            "registry_stale_max": max(stale),
        }

    def converged(self):
        live = self.live_peers()
        alive_ids = {p.node_id for p in live} | {t.node_id for t in self.trackers}
        peers_ok = sum(self.live_outbound(p, alive_ids) >= OUTBOUND_PEERS for p in live)
        peer_ids = {p.node_id for p in live}
        trackers_ok = sum(peer_ids <= {r.node_id for r in t.core.registry.peers()} for t in self.trackers)
        return peers_ok, trackers_ok

    def run_until(self, t):
        self.clock.run_until(t)

    # --- phases ---

    def bootstrap(self, limit_s):
        for i in range(self.args.trackers):
            tracker = self.make_tracker(i)
            self.trackers.append(tracker)
            self.start_later(tracker, 1.0)
        for _ in range(self.args.peers):
            self.add_peer(within_s=self.args.join_over)
        t_peers = t_trackers = None
        progress = []
        t0 = self.clock.seconds()
        t = 0.0
        while t < limit_s:
            t += 1.0
            self.run_until(t0 + t)
            peers_ok, trackers_ok = self.converged()
            if t_peers is None and peers_ok == len(self.peers):
                t_peers = t
            if t_trackers is None and trackers_ok == len(self.trackers):
                t_trackers = t
            if t % 10 == 0:
                progress.append((t, peers_ok, trackers_ok))
                if self.args.verbose:
                    print(f"  t={t:5.0f}s peers>=8: {peers_ok:5d}/{len(self.peers)} trackers complete: "
                          f"{trackers_ok}/{len(self.trackers)} pending calls {self.clock.pending}", flush=True)
            if t_peers is not None and t_trackers is not None:
                break
        done = t if t_peers is not None and t_trackers is not None else None
        return {
            "converged_s": done,
            "peers_ge8_s": t_peers,
            "trackers_complete_s": t_trackers,
            "limit_s": limit_s,
            "progress": progress,
            "final": self.snapshot(),
        }

    def measure_rates(self, duration_s, churn_per_min=0.0, sample_every_s=10.0, sample_after_s=0.0):
        """Run for ``duration_s``, optionally with churn; frame and byte rates
        per live peer per minute, and snapshots every ``sample_every_s``."""
        frames0, bytes0, types0 = self.net.counters()
        start = self.clock.seconds()
        samples = []
        live_counts = []
        step_s = 6.0 if churn_per_min else sample_every_s
        left = joined = 0
        acc = 0.0
        t = start
        while t < start + duration_s - 1e-9:
            t = min(t + step_s, start + duration_s)
            self.run_until(t)
            if churn_per_min:
                acc += churn_per_min * len(self.live_peers()) * step_s / 60.0
                n, acc = int(acc), acc - int(acc)
                for peer in self.rng.sample(self.live_peers(), n):
                    peer.sim_kill()
                    left += 1
                for _ in range(n):
                    self.add_peer(within_s=step_s)
                    joined += 1
            live_counts.append(len(self.live_peers()))
            if self.args.verbose and round(t - start) % 30 == 0:
                frames = sum(v for (k, d), v in self.net.frames.items() if d == "tx")
                print(f"  +{t - start:4.0f}s {frames:,} frames so far, pending calls {self.clock.pending:,}", flush=True)
            if t - start >= sample_after_s and round(t - start) % sample_every_s == 0:
                samples.append(self.snapshot(min_age_s=60.0))
        frames1, bytes1, types1 = self.net.counters()
        minutes = duration_s / 60.0
        n_peers = statistics.fmean(live_counts)
        n_trackers = len(self.trackers)

        def per(kind, counter, n, direction):
            return (counter[kind, direction]) / n / minutes

        frames, nbytes, types = frames1 - frames0, bytes1 - bytes0, types1 - types0
        by_type = collections.Counter()
        for (kind, direction, name), count in types.items():
            if kind == "peer" and direction == "tx":
                by_type[name] = count / n_peers / minutes
        result = {
            "duration_s": duration_s,
            "mean_live_peers": n_peers,
            "peer_frames_tx_per_min": per("peer", frames, n_peers, "tx"),
            "peer_frames_rx_per_min": per("peer", frames, n_peers, "rx"),
            "peer_bytes_tx_per_min": per("peer", nbytes, n_peers, "tx"),
            "peer_bytes_rx_per_min": per("peer", nbytes, n_peers, "rx"),
            "tracker_frames_tx_per_min": per("tracker", frames, n_trackers, "tx"),
            "tracker_frames_rx_per_min": per("tracker", frames, n_trackers, "rx"),
            "tracker_bytes_tx_per_min": per("tracker", nbytes, n_trackers, "tx"),
            "tracker_bytes_rx_per_min": per("tracker", nbytes, n_trackers, "rx"),
            "peer_tx_by_type_per_min": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        }
        if churn_per_min:
            result["left"] = left
            result["joined"] = joined
        if samples:
            result["samples"] = samples
            result["mean"] = {k: statistics.fmean(s[k] for s in samples) for k in samples[0] if k != "t_s"}
        return result

    def eclipse(self, victims_per_variant, rounds, flood_s, refill_s):
        self.attacker = Attacker(self, random.Random(self.rng.getrandbits(64)))
        self.net.resolver = self.attacker.resolve
        now = self.clock.seconds()
        candidates = [p for p in self.live_peers() if now - p.started_at >= 120.0]
        variants = ("orb", "orb-no-group-rule", "naive-book-no-group-rule")
        chosen = self.rng.sample(candidates, victims_per_variant * len(variants))
        victims = []
        for i, victim in enumerate(chosen):
            variant = variants[i // victims_per_variant]
            if variant != "orb":
                victim.core.connections.group_fn = _own_group
            if variant.startswith("naive"):
                book = NaiveBook(self.clock, random.Random(self.rng.getrandbits(64)))
                book.add(victim.addrbook.addresses(), victim.host)
                victim.use_addrbook(book)
            victims.append((variant, victim))
            before = victim.addrbook.addresses()
            victim.eclipse_book_before = len(before)
            self.attacker.flood(victim, ATTACKER_SESSIONS)
        self.run_until(self.clock.seconds() + flood_s)
        for variant, victim in victims:
            addrs = victim.addrbook.addresses()
            victim.eclipse_book_after = (len(addrs), sum(a.ip.startswith(ATTACKER_PREFIX) for a in addrs))
        shares = collections.defaultdict(list)
        for _ in range(rounds):
            for variant, victim in victims:
                for r in victim.outbound_peers():
                    r.protocol.transport.loseConnection()
            self.run_until(self.clock.seconds() + refill_s)
            for variant, victim in victims:
                out = victim.outbound_peers()
                bad = sum(1 for r in out if r.node_id in self.attacker.node_ids)
                shares[variant].append((bad, len(out)))
        report = {}
        for variant in variants:
            rows = shares[variant]
            slots = [bad / OUTBOUND_PEERS for bad, _ in rows]
            filled = [bad / n for bad, n in rows if n]
            books = [v.eclipse_book_after for var, v in victims if var == variant]
            report[variant] = {
                "samples": len(rows),
                "attacker_share_of_8_slots": statistics.fmean(slots),
                "attacker_share_max": max(slots),
                "attacker_share_of_filled": statistics.fmean(filled) if filled else None,
                "mean_outbound_filled": statistics.fmean(n for _, n in rows),
                "rounds_with_any_attacker": sum(1 for bad, _ in rows if bad) / len(rows),
                "book_size_after_flood": statistics.fmean(b[0] for b in books),
                "attacker_entries_in_book": statistics.fmean(b[1] for b in books),
            }
        report["attacker_nodes_contacted"] = len(self.attacker.nodes)
        report["victims_per_variant"] = victims_per_variant
        report["rounds"] = rounds
        report["flood_s"] = flood_s
        report["refill_s"] = refill_s
        return report


def _own_group(ip):
    """Every address its own group: the one-outbound-per-/16 rule never bites."""
    return ip.encode()


# --- logging: count what the nodes log, keep the worst -------------------------------------------


class LogTally:
    def __init__(self, keep=20, min_level=LogLevel.warn):
        self.min_level = min_level
        self.levels = collections.Counter()
        self.formats = collections.Counter()
        self.errors = []
        self.keep = keep

    def __call__(self, event):
        level = event.get("log_level")
        name = level.name if level is not None else "?"
        self.levels[name] += 1
        if level is not None and level >= self.min_level:
            self.formats[(name, event.get("log_format") or "")] += 1
        if level is not None and level >= LogLevel.error and len(self.errors) < self.keep:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += "\n" + failure.getTraceback()
            self.errors.append(text)


# --- baseline ---------------------------------------------------------------------------------------


def codec_baseline(n=20000):
    magic = network_magic("main")
    decoder = FrameDecoder(magic)
    ping = m.Ping(nonce=7)
    start = time.perf_counter()
    for i in range(n):
        decoder.feed(encode_frame(magic, ping, i + 1))
    return (time.perf_counter() - start) / n


# --- main ---------------------------------------------------------------------------------------------


def print_rates(r):
    print(f"   per peer per minute:    sent {r['peer_frames_tx_per_min']:,.1f} frames / "
          f"{r['peer_bytes_tx_per_min']:,.0f} B, received {r['peer_frames_rx_per_min']:,.1f} frames / "
          f"{r['peer_bytes_rx_per_min']:,.0f} B")
    print(f"   per tracker per minute: sent {r['tracker_frames_tx_per_min']:,.0f} frames / "
          f"{r['tracker_bytes_tx_per_min']:,.0f} B, received {r['tracker_frames_rx_per_min']:,.0f} frames / "
          f"{r['tracker_bytes_rx_per_min']:,.0f} B")
    print("   peer frames sent per minute by type: " + ", ".join(
        f"{k} {v:,.1f}" for k, v in r["peer_tx_by_type_per_min"].items()))


def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=None, help="honest peers [1000; 150 with --quick]")
    parser.add_argument("--trackers", type=int, default=None, help="trackers [10; 3 with --quick]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument("--tracker-max-inbound", type=int, default=None,
                        help="the trackers' --max-inbound [3 x peers / trackers]")
    parser.add_argument("--join-over", type=float, default=1.0,
                        help="initial peers start at uniformly random times in this window [s]")
    parser.add_argument("--bootstrap-limit", type=float, default=900.0, help="give up converging after this [s]")
    parser.add_argument("--steady", type=float, default=None, help="steady-state window [60 s]")
    parser.add_argument("--churn", type=float, default=None, help="churn phase [120 s; 180 with --quick]")
    parser.add_argument("--churn-rate", type=float, default=0.10, help="fraction of peers replaced per minute")
    parser.add_argument("--min-latency-ms", type=float, default=5.0)
    parser.add_argument("--max-latency-ms", type=float, default=50.0)
    parser.add_argument("--no-eclipse", action="store_true")
    parser.add_argument("--out", default=os.path.join(OUT_DIR, "discovery.json"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.peers is None:
        args.peers = 150 if args.quick else 1000
    if args.trackers is None:
        args.trackers = 3 if args.quick else 10
    if args.steady is None:
        args.steady = 60.0
    if args.churn is None:
        args.churn = 180.0 if args.quick else 120.0
    if args.tracker_max_inbound is None:
        args.tracker_max_inbound = max(117, 3 * args.peers // args.trackers)
    tally = LogTally()
    globalLogBeginner.beginLoggingTo([tally], redirectStandardIO=False, discardBuffer=True)

    wall0 = time.perf_counter()
    codec_s = codec_baseline()
    sim = Simulation(args)
    print(f"discovery simulation: {args.peers} peers, {args.trackers} trackers, seed {args.seed}, "
          f"latency {args.min_latency_ms:g}-{args.max_latency_ms:g} ms, tracker max inbound {args.tracker_max_inbound}",
          flush=True)
    result = {"args": vars(args)}

    phase_wall = {}
    w = time.perf_counter()
    boot = sim.bootstrap(args.bootstrap_limit)
    phase_wall["bootstrap"] = time.perf_counter() - w
    result["bootstrap"] = boot
    f = boot["final"]
    print("\n1. bootstrap (all nodes start within the first second; each peer knows 1 tracker)")
    print(f"   every peer >= {OUTBOUND_PEERS} live outbound peers: {fmt(boot['peers_ge8_s'], 0)} s")
    print(f"   every tracker knows every peer:      {fmt(boot['trackers_complete_s'], 0)} s")
    print(f"   both (converged):                    {fmt(boot['converged_s'], 0)} s simulated"
          f"   [{phase_wall['bootstrap']:.1f} s wall]")
    if boot["converged_s"] is None:
        print(f"   NOT CONVERGED within {args.bootstrap_limit:g} s: {f['frac_ge8']:.3f} of peers have >= 8, "
              f"trackers know {f['registry_known']:.3f} of peers (min {f['registry_known_min']:.3f})")

    w = time.perf_counter()
    sim.run_until(sim.clock.seconds() + 30.0)  # settle: the last joiners' GETADDR and announces
    steady = sim.measure_rates(args.steady)
    steady["snapshot"] = sim.snapshot()
    phase_wall["steady"] = time.perf_counter() - w
    result["steady"] = steady
    print(f"\n2. steady state, {args.steady:g} s window   [{phase_wall['steady']:.1f} s wall]")
    print_rates(steady)
    s = steady["snapshot"]
    print(f"   connectivity: {s['frac_ge8']:.3f} of peers >= 8 outbound, mean {s['mean_outbound']:.2f}; "
          f"trackers know {s['registry_known']:.4f} of peers, {s['registry_stale']:.1f} stale")

    if args.churn:
        w = time.perf_counter()
        sample_after_s = min(120.0, args.churn / 2)
        churn = sim.measure_rates(args.churn, churn_per_min=args.churn_rate, sample_every_s=6.0,
                                  sample_after_s=sample_after_s)
        phase_wall["churn"] = time.perf_counter() - w
        result["churn"] = churn
        c = churn["mean"]
        print(f"\n3. churn {args.churn_rate:.0%}/min for {args.churn:g} s ({churn['left']} left, {churn['joined']} "
              f"joined); means of {len(churn['samples'])} samples from t+{sample_after_s:g} s   "
              f"[{phase_wall['churn']:.1f} s wall]")
        print(f"   live peers with >= 8 live outbound: {c['frac_ge8']:.3f} (peers up >= 60 s: "
              f"{c['frac_ge8_settled']:.3f}); mean outbound {c['mean_outbound']:.2f}")
        print(f"   trackers know {c['registry_known']:.3f} of live peers (up >= 60 s: "
              f"{c['registry_known_settled']:.3f}; worst tracker {c['registry_known_min']:.3f}); stale entries "
              f"{c['registry_stale']:.1f} per tracker (max {c['registry_stale_max']:.0f}) of ~{c['live_peers']:.0f} live")
        print_rates(churn)

    if not args.no_eclipse:
        w = time.perf_counter()
        # Let the last joiners age past the victims' minimum age of 120 s.
        sim.run_until(sim.clock.seconds() + 60.0)
        victims = 2 if args.quick else 3
        rounds = 3
        eclipse = sim.eclipse(victims, rounds, flood_s=120.0, refill_s=20.0)
        phase_wall["eclipse"] = time.perf_counter() - w
        result["eclipse"] = eclipse
        print(f"\n4. eclipse: attacker owns {ATTACKER_PREFIX}0.0/16 ({ATTACKER_ADDRESSES} live addresses), "
              f"{ATTACKER_SESSIONS} paced ADDR sessions per victim for {eclipse['flood_s']:g} s, answers GETADDR "
              f"with 1000 of its addresses; then {rounds} x (drop outbound, refill {eclipse['refill_s']:g} s), "
              f"{victims} victims per variant   [{phase_wall['eclipse']:.1f} s wall]")
        for variant in ("orb", "orb-no-group-rule", "naive-book-no-group-rule"):
            e = eclipse[variant]
            print(f"   {variant:<26} attacker gets {e['attacker_share_of_8_slots']:.3f} of the 8 outbound slots "
                  f"(max {e['attacker_share_max']:.3f}; {fmt(e['attacker_share_of_filled'], 3)} of filled; "
                  f"any in {e['rounds_with_any_attacker']:.0%} of {e['samples']} refills); book "
                  f"{e['attacker_entries_in_book']:.0f} attacker / {e['book_size_after_flood']:.0f} entries")

    wall = time.perf_counter() - wall0
    frames, _, _ = sim.net.counters()
    total_frames = sum(v for (k, d), v in frames.items() if d == "tx")
    result["wall_s"] = wall
    result["phase_wall_s"] = phase_wall
    result["simulated_s"] = sim.clock.seconds() - EPOCH_S
    result["baseline"] = {
        "ping_encode_decode_us": codec_s * 1e6,
        "frames_simulated": total_frames,
        "wall_us_per_simulated_frame": wall / max(1, total_frames) * 1e6,
    }
    result["dials"] = dict(sim.net.dials)
    result["log_levels"] = dict(tally.levels)
    result["log_warnings"] = [{"level": lvl, "format": fmt_, "count": n} for (lvl, fmt_), n in tally.formats.most_common(20)]
    result["log_errors"] = tally.errors
    result["clock_failures"] = sim.clock.failures
    print(f"\nwall clock {wall:.1f} s for {sim.clock.seconds() - EPOCH_S:.0f} simulated s; {total_frames:,} frames sent, "
          f"{wall / max(1, total_frames) * 1e6:.0f} us wall per frame (all node logic included) against "
          f"{codec_s * 1e6:.1f} us for a bare PING encode+decode")
    print(f"dials: {dict(sim.net.dials)}; log events by level: {dict(tally.levels)}")
    for (lvl, fmt_), n in tally.formats.most_common(8):
        print(f"   {n:6d} x {lvl}: {fmt_[:110]}")
    if tally.errors or sim.clock.failures:
        print(f"ERRORS logged: {len(tally.errors)} kept (first below); calls that raised: {sim.clock.failures}")
        print(tally.errors[0][:3000] if tally.errors else "")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fobj:
        json.dump(result, fobj, indent=1, default=str)
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Same seed, same run: set iteration order does not vary either.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    sys.exit(main())
