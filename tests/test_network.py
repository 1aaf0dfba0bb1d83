"""
The network, for real: twistd tracker and peer processes on loopback.

These tests start real daemons (TLS, SQLite, the HTTP API) and stop every
one of them. They take some seconds each, and are the few integration
tests of the suite.
"""

import os
import signal

import attrs
from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase

from orb.identity import NodeKey
from orb.net.adapter import OrbFactory, RemoteError, SessionHandler
from orb.net.tls import NodeTLS
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.federation import PEER, TRACKER, PeerStatement
from orb.protocol.frame import HEADER
from orb.protocol.session import LocalIdentity, SessionConfig
from tests import _records as records
from tests._daemons import DaemonTestMixin, eventually, sleep


def peer_ids(listing):
    return {p["node_id"] for p in listing["peers"]}


@defer.inlineCallbacks
def listed(tracker, peer):
    """True once the tracker's REST API lists the peer."""
    code, listing = yield tracker.get_json("/api/v1/peers")
    return peer.node_id in peer_ids(listing)


class Client(SessionHandler):
    """An in-test ORB client, honest or not, speaking real TLS to a daemon."""

    def __init__(self, network, roles=Role.PEER, listen=(), key=None):
        self.key = key or NodeKey.generate()
        self.network = network
        self.roles = roles
        self.listen = tuple(m.Endpoint(h, p) for h, p in listen)
        self.ready = defer.Deferred()
        self.lost = defer.Deferred()
        self.protocol = None

    def session_ready(self, protocol):
        self.protocol = protocol
        self.ready.callback(protocol)

    def session_lost(self, protocol, reason):
        if not self.lost.called:
            self.lost.callback(None)

    @defer.inlineCallbacks
    def connect(self, host, port):
        identity = LocalIdentity(self.key.public_bytes, int(self.roles), listen=self.listen)
        factory = OrbFactory(identity, self, reactor, initiator=True, config=SessionConfig(network=self.network))
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=5)
        wrapper = yield endpoint.connect(NodeTLS(self.key).wrap(factory, is_client=True))
        self.wrapper = wrapper
        yield self.ready
        return self.protocol

    def close(self):
        if not self.lost.called:
            self.wrapper.transport.abortConnection()


class NetworkTests(DaemonTestMixin, TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_two_trackers_five_peers_converge(self):
        """Every peer is visible at both trackers (federation), and peers find each other."""
        t1, t2 = yield self.start_trackers("t1", "t2")
        peers = []
        for i in range(5):
            tracker = t1 if i < 3 else t2
            peer = yield self.start_peer(f"p{i}", "--tracker", tracker.wire_text, "--outbound-peers", "4")
            peers.append(peer)
        expected = {p.node_id for p in peers}

        @defer.inlineCallbacks
        def converged():
            for tracker in (t1, t2):
                code, listing = yield tracker.get_json("/api/v1/peers")
                if peer_ids(listing) != expected:
                    return False
                code, trackers = yield tracker.get_json("/api/v1/trackers")
                if len(trackers["trackers"]) != 2:
                    return False
            return True

        yield eventually(converged, timeout_s=40, what="both trackers know all 5 peers")

        @defer.inlineCallbacks
        def gateway_known():  # t1's signed record names its HTTP gateway; t2 learns it by federation
            code, trackers = yield t2.get_json("/api/v1/trackers")
            far = {t["node_id"]: t for t in trackers["trackers"]}.get(t1.node_id, {})
            return far.get("gateways") == [{"ip": "127.0.0.1", "port": t1.info["http"]}]

        yield eventually(gateway_known, timeout_s=20, what="t2 knows t1's gateway from t1's tracker record")
        code, listing = yield t2.get_json("/api/v1/peers")
        homes = {p["node_id"]: p["home"] for p in listing["peers"]}
        self.assertEqual({homes[p.node_id] for p in peers[:3]}, {t1.node_id})
        self.assertEqual({p["reachability"] for p in listing["peers"]}, {"reachable"})
        # Peers find each other: one session per pair of nodes, whoever dialled.
        yield eventually(lambda: all(p.status()["peer_sessions"] >= 2 for p in peers), timeout_s=40,
                         what="every peer has sessions with other peers")
        self.assertGreaterEqual(sum(p.status()["outbound_peers"] for p in peers), 5)

    @defer.inlineCallbacks
    def test_kill_a_tracker_and_its_peers_rehome(self):
        """When a tracker is killed with SIGKILL, its peers re-home to the surviving tracker."""
        t1, t2 = yield self.start_trackers("t1", "t2")
        peers = []
        for i in range(3):
            peer = yield self.start_peer(f"p{i}", "--tracker", t1.wire_text, "--outbound-peers", "2")
            peers.append(peer)
        yield eventually(lambda: all(p.status()["outbound_trackers"] == 2 for p in peers), timeout_s=40,
                         what="peers linked to both trackers")
        yield t1.stop(signal.SIGKILL)

        @defer.inlineCallbacks
        def rehomed():
            code, listing = yield t2.get_json("/api/v1/peers")
            homes = {p["node_id"]: p["home"] for p in listing["peers"]}
            return all(homes.get(p.node_id) == t2.node_id for p in peers)

        yield eventually(rehomed, timeout_s=30, what="peers re-homed to the surviving tracker")

    @defer.inlineCallbacks
    def test_restart_restores_identity_registry_and_address_book(self):
        """After a clean restart a tracker keeps its node id and registry, and a peer rejoins from its address book."""
        t1 = yield self.start_tracker("t1")
        p1 = yield self.start_peer("p1", "--tracker", t1.wire_text)

        yield eventually(lambda: listed(t1, p1), what="peer registered")
        yield sleep(5.5)  # one save period, so the peer's address book holds the tracker
        yield p1.stop()
        yield t1.stop()
        for daemon in (p1, t1):  # twistd re-raises SIGTERM after a clean shutdown
            self.assertEqual(daemon.exit_signal, signal.SIGTERM)
            self.assertIn("stopped; state saved", daemon.text)
        tracker_port = t1.info["wire"]

        t1_again = self.daemon("orb-tracker", "t1", "--listen", f"tcp:{tracker_port}:interface=127.0.0.1",
                               "--http", "tcp:0:interface=127.0.0.1")
        yield t1_again.start()
        self.assertEqual(t1_again.node_id, t1.node_id)
        code, listing = yield t1_again.get_json("/api/v1/peers")
        self.assertIn(p1.node_id, peer_ids(listing))  # restored from SQLite before any reconnect

        # No --tracker: the peer rejoins from its persisted address book.
        p1_again = self.daemon("orb-peer", "p1", "--listen", f"tcp:{p1.info['wire']}:interface=127.0.0.1")
        yield p1_again.start()
        self.assertEqual(p1_again.node_id, p1.node_id)
        yield eventually(lambda: p1_again.status()["outbound_trackers"] >= 1, what="peer rejoined from its book")

    @defer.inlineCallbacks
    def test_sigkill_loses_no_identity_or_registry(self):
        """A tracker killed with SIGKILL comes back with the same node id and the peers it had registered."""
        t1 = yield self.start_tracker("t1")
        p1 = yield self.start_peer("p1", "--tracker", t1.wire_text)

        yield eventually(lambda: listed(t1, p1), what="peer registered")
        yield sleep(5.5)  # one save period
        yield p1.stop(signal.SIGKILL)
        yield t1.stop(signal.SIGKILL)
        again = self.daemon("orb-tracker", "t1", "--listen", "tcp:0:interface=127.0.0.1",
                            "--http", "tcp:0:interface=127.0.0.1")
        yield again.start()
        self.assertEqual(again.node_id, t1.node_id)
        code, listing = yield again.get_json("/api/v1/peers")
        self.assertIn(p1.node_id, peer_ids(listing))

    @defer.inlineCallbacks
    def test_unreachable_peer_is_relayed(self):
        """A peer whose advertised address does not answer is relayed, and keeps 2 tracker links."""
        t1, t2 = yield self.start_trackers("t1", "t2")
        closed_port = t2.info["http"] + 0  # an HTTP port answers TCP but not TLS/ORB: the dial-back fails
        p1 = yield self.start_peer("p1", "--tracker", t1.wire_text, "--advertise", f"127.0.0.1:{closed_port}")

        @defer.inlineCallbacks
        def relayed_at_tracker():
            code, listing = yield t1.get_json("/api/v1/peers")
            return any(p["node_id"] == p1.node_id and p["reachability"] == "relayed" for p in listing["peers"])

        yield eventually(relayed_at_tracker, timeout_s=30, what="tracker marks the peer relayed")
        yield eventually(lambda: p1.status()["reachability"] == "relayed", timeout_s=30,
                         what="the peer knows it is relayed")
        yield eventually(lambda: p1.status()["outbound_trackers"] >= 2, timeout_s=30,
                         what="a relayed peer keeps two tracker links")

    @defer.inlineCallbacks
    def test_bad_gossip_is_survived(self):
        """After oversized ADDR, ADDR floods and garbage addresses the tracker keeps serving, and gossips no garbage."""
        t1 = yield self.start_tracker("t1")
        honest = yield self.start_peer("honest", "--tracker", t1.wire_text)

        # 1. An ADDR announcing 1001 entries: malformed, the session is dropped.
        bad = Client(self.network)
        protocol = yield bad.connect(*t1.wire)
        body = b"\x03\xe9" + b"\x00" * 59 * 1001
        protocol.transport.write(HEADER.pack(protocol.session.config.magic, 1, m.MessageType.ADDR, 0, 0, len(body)) + body)
        yield bad.lost

        # 2. A flood of garbage and self addresses.
        flooder = Client(self.network)
        protocol = yield flooder.connect(*t1.wire)
        now = int(reactor.seconds())
        garbage = [
            m.AddrEntry(now, "0.0.0.0", 7400, 1, os.urandom(32)),
            m.AddrEntry(now, "224.0.0.1", 7400, 1, os.urandom(32)),
            m.AddrEntry(now, "255.255.255.255", 7400, 1, os.urandom(32)),
            m.AddrEntry(now, "127.0.0.1", 0, 1, os.urandom(32)),
            m.AddrEntry(now, "127.0.0.1", t1.info["wire"], 2, bytes.fromhex(t1.node_id)),
            m.AddrEntry(2**63, "127.0.0.1", 9, 1, os.urandom(32)),
        ]
        flood = [m.AddrEntry(now, f"10.{i // 250}.{i % 250}.7", 7400, 1, os.urandom(32)) for i in range(994)]
        for _ in range(30):
            protocol.send(m.Addr(entries=garbage + flood))
        yield sleep(1.0)

        # The honest peer is still listed, and a new honest client is served.
        code, listing = yield t1.get_json("/api/v1/peers")
        self.assertIn(honest.node_id, peer_ids(listing))
        client = Client(self.network)
        served = yield client.connect(*t1.wire)
        answer = yield served.request(m.GetAddr(), timeout_s=10)
        hosts = {(e.host, e.port) for e in answer.entries}
        for entry in garbage:
            self.assertNotIn((entry.host, entry.port), hosts - {("127.0.0.1", t1.info["wire"])})
        # The flood was rate-limited: far fewer than 30 x 1000 addresses were taken in.
        self.assertLess(len(answer.entries), 1000)
        code, stats = yield t1.get_json("/api/v1/stats")
        self.assertEqual(code, 200)
        for c in (bad, flooder, client):
            c.close()
        # The daemon is alive and still answers its API.
        self.assertTrue(t1.running)

    @defer.inlineCallbacks
    def test_claiming_the_tracker_role_federates_nothing(self):
        """A client that claims the tracker role unadmitted gets ERROR(denied) to SYNC, and its DELTA moves no peer."""
        from orb.tracker import registry as reg

        t1 = yield self.start_tracker("t1")
        honest = yield self.start_peer("honest", "--tracker", t1.wire_text)
        yield eventually(lambda: listed(t1, honest), what="the honest peer is listed")
        code, before = yield t1.get_json(f"/api/v1/peers/{honest.node_id}")
        liar = Client(self.network, roles=Role.TRACKER | Role.RELAY)
        protocol = yield liar.connect(*t1.wire)
        with self.assertRaises(RemoteError) as caught:
            yield protocol.request(m.Sync(digest=reg.Registry(reactor, liar.key).digest().to_bytes()),
                                   timeout_s=10)
        self.assertEqual(caught.exception.code, ErrorCode.DENIED)
        # The liar's word for the honest peer: another address, and itself as the home.
        record = records.peer_record(liar.key, liar.key, seq=2**40, time=int(reactor.seconds()),
                                     addresses=[("10.66.6.6", 6666)])
        record = attrs.evolve(record, statement=attrs.evolve(record.statement, node_id=bytes.fromhex(honest.node_id)))
        change = reg.Change(liar.key.node_id, 1, PEER, record)
        protocol.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=reg.Delta(changes=(change,)).to_bytes()))
        yield sleep(1.0)
        code, after = yield t1.get_json(f"/api/v1/peers/{honest.node_id}")
        self.assertEqual(after["addresses"], before["addresses"])
        self.assertEqual(after["home"], t1.node_id)
        code, trackers = yield t1.get_json("/api/v1/trackers")
        self.assertNotIn(liar.key.node_id.hex(), {t["node_id"] for t in trackers["trackers"]})
        liar.close()

    @defer.inlineCallbacks
    def test_hello_ack_lists_the_listen_address(self):
        """A daemon started on port 0 answers HELLO with a HELLO_ACK listing the address it really listens on."""
        t1 = yield self.start_tracker("t1")
        client = Client(self.network)
        protocol = yield client.connect(*t1.wire)
        self.assertEqual([(e.host, e.port) for e in protocol.remote.listen], [tuple(t1.wire)])
        client.close()

    @defer.inlineCallbacks
    def test_wrong_network_is_refused(self):
        """A client on another network is disconnected before any session opens, and the tracker keeps running."""
        t1 = yield self.start_tracker("t1")
        client = Client("main")  # the daemons run on network "itest"
        factory = OrbFactory(LocalIdentity(client.key.public_bytes, int(Role.PEER)), client, reactor,
                             initiator=True, config=SessionConfig(network="main"))
        endpoint = endpoints.TCP4ClientEndpoint(reactor, *t1.wire, timeout=5)
        yield endpoint.connect(NodeTLS(client.key).wrap(factory, is_client=True))
        yield client.lost
        self.assertFalse(client.ready.called)
        self.assertTrue(t1.running)


class HostileClientTests(DaemonTestMixin, TestCase):
    """Findings of the outside tests (issue 9), each against a real tracker, with an honest client served
    throughout and no traceback in the tracker's log."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.admitted_key = NodeKey.generate()
        self.t1 = yield self.start_tracker("t1", "--admit", self.admitted_key.node_id.hex())
        self.honest = Client(self.network)
        self.honest_protocol = yield self.honest.connect(*self.t1.wire)
        self.addCleanup(self.honest.close)

    @defer.inlineCallbacks
    def still_served(self):
        """The end of every test here: the honest client is answered, and the log holds no traceback.
        (Trial runs cleanups, which stop the daemons, before tearDown: so this is called by each test.)"""
        self.assertTrue(self.honest_protocol.ready)
        answer = yield self.honest_protocol.request(m.GetAddr(), timeout_s=10)
        self.assertIsInstance(answer, m.Addr)
        self.assertEqual(self.t1.tracebacks, 0, self.t1.text[-3000:])
        self.assertTrue(self.t1.running)

    @defer.inlineCallbacks
    def test_throwaway_tracker_identities_take_no_slot(self):
        """Thirty fresh identities claiming the tracker role get no tracker record; an admitted one does."""
        from orb.tracker import registry as reg

        def own_record(client):
            """The client's own signed tracker record, as its first change."""
            record = records.tracker_record(client.key, time=int(reactor.seconds()), addresses=[("127.0.0.1", 9)])
            return m.Delta(kind=int(m.DeltaKind.CHANGES),
                           payload=reg.Delta(changes=(reg.Change(client.key.node_id, 1, TRACKER, record),)).to_bytes())

        liars = []
        for _ in range(30):
            liar = Client(self.network, roles=Role.TRACKER | Role.RELAY, listen=[("127.0.0.1", 9)])
            protocol = yield liar.connect(*self.t1.wire)
            protocol.send(own_record(liar))
            liars.append(liar)
        real = Client(self.network, roles=Role.TRACKER | Role.RELAY, listen=[("127.0.0.1", 9)], key=self.admitted_key)
        protocol = yield real.connect(*self.t1.wire)
        protocol.send(own_record(real))
        yield eventually(lambda: self.tracker_ids().addCallback(lambda ids: self.admitted_key.node_id.hex() in ids),
                         what="the admitted tracker's record is listed")
        ids = yield self.tracker_ids()
        self.assertEqual(ids, {self.t1.node_id, self.admitted_key.node_id.hex()})
        for c in liars + [real]:
            c.close()
        yield self.still_served()

    @defer.inlineCallbacks
    def tracker_ids(self):
        code, listing = yield self.t1.get_json("/api/v1/trackers")
        return {t["node_id"] for t in listing["trackers"]}

    @defer.inlineCallbacks
    def test_listen_port_zero_is_no_crash(self):
        """A tracker claim and an ANNOUNCE with listen port 0 are refused or ignored, never a traceback."""
        liar = Client(self.network, roles=Role.TRACKER | Role.RELAY, listen=[("127.0.0.1", 0)])
        yield liar.connect(*self.t1.wire)
        peer = Client(self.network, listen=[("127.0.0.1", 0)])
        protocol = yield peer.connect(*self.t1.wire)
        statement = PeerStatement(peer.key.node_id, peer.key.public_bytes, 1, int(reactor.seconds()),
                                  bytes.fromhex(self.t1.node_id), (("127.0.0.1", 0),)).signed(peer.key.sign)
        protocol.send(records.to_announce(statement))
        yield sleep(1.0)
        code, listing = yield self.t1.get_json("/api/v1/peers")
        self.assertNotIn(peer.key.node_id.hex(), peer_ids(listing))
        liar.close()
        peer.close()
        yield self.still_served()

    @defer.inlineCallbacks
    def test_an_admitted_tracker_cannot_rewrite_a_live_peer(self):
        """Even an admitted tracker's DELTA that moves a live peer to 10.66.6.6:6666 is refused: the peer signs its own record."""
        from orb.tracker import registry as reg

        honest = yield self.start_peer("honest", "--tracker", self.t1.wire_text)
        yield eventually(lambda: listed(self.t1, honest), what="the honest peer is listed")
        code, before = yield self.t1.get_json(f"/api/v1/peers/{honest.node_id}")
        forger = Client(self.network, roles=Role.TRACKER | Role.RELAY, key=self.admitted_key)
        protocol = yield forger.connect(*self.t1.wire)
        # The forger's own statement for the victim: its address, a higher seq, the forger as home; the
        # forger's observation beside it. Signed by the forger, not by the peer.
        fake = records.peer_record(self.admitted_key, self.admitted_key, seq=2**62, time=int(reactor.seconds()),
                                   addresses=[("10.66.6.6", 6666)])
        fake = attrs.evolve(fake, statement=attrs.evolve(fake.statement, node_id=bytes.fromhex(honest.node_id)),
                            observation=attrs.evolve(fake.observation, peer=bytes.fromhex(honest.node_id)))
        change = reg.Change(self.admitted_key.node_id, 1, PEER, fake)
        protocol.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=reg.Delta(changes=(change,)).to_bytes()))
        yield sleep(1.0)
        code, after = yield self.t1.get_json(f"/api/v1/peers/{honest.node_id}")
        self.assertEqual((after["addresses"], after["home"]), (before["addresses"], before["home"]))
        self.assertIn("refused a change", self.t1.text)
        forger.close()
        yield self.still_served()

    @defer.inlineCallbacks
    def test_a_maximal_stamp_does_not_stop_saving(self):
        """A change claiming the tracker's own origin at seq 2^63-1 is refused, and a peer statement at seq 2^63-1
        is stored as it is: the tracker keeps registering and saving peers."""
        from orb.tracker import registry as reg

        forger = Client(self.network, roles=Role.TRACKER | Role.RELAY, key=self.admitted_key)
        protocol = yield forger.connect(*self.t1.wire)
        record = records.peer_record(records.key("maximal"), self.admitted_key, seq=2**63 - 1,
                                     time=int(reactor.seconds()), addresses=[("127.0.0.1", 9)])
        changes = (reg.Change(bytes.fromhex(self.t1.node_id), 2**63 - 1, PEER, record),
                   reg.Change(self.admitted_key.node_id, 1, PEER, record))
        for change in changes:
            protocol.send(m.Delta(kind=int(m.DeltaKind.CHANGES), payload=reg.Delta(changes=(change,)).to_bytes()))
        yield sleep(1.0)
        peer = yield self.start_peer("p1", "--tracker", self.t1.wire_text)
        yield eventually(lambda: listed(self.t1, peer), what="a peer registered after the forged stamp")
        yield self.t1.stop()
        again = yield self.start_tracker("t1", "--admit", self.admitted_key.node_id.hex())
        self.t1 = again
        code, listing = yield again.get_json(f"/api/v1/peers/{peer.node_id}")
        self.assertEqual(code, 200)  # it was saved
        forger.close()
        self.honest = Client(self.network)
        self.honest_protocol = yield self.honest.connect(*again.wire)
        self.addCleanup(self.honest.close)
        yield self.still_served()

    @defer.inlineCallbacks
    def test_remote_error_text_is_escaped_in_the_log(self):
        """An ERROR with a right-to-left override and a terminal escape reaches the log escaped."""
        liar = Client(self.network)
        protocol = yield liar.connect(*self.t1.wire)
        protocol.send(m.Error(code=1, ref_request_id=0, text="\u202egnp.exe\x1b[2J"))
        yield sleep(1.0)
        self.assertNotIn("\u202e", self.t1.text)
        self.assertNotIn("\x1b[2J", self.t1.text)
        self.assertIn("\\u202egnp.exe\\u001b[2J", self.t1.text)
        liar.close()
        yield self.still_served()


class DaemonLifecycleTests(DaemonTestMixin, TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_sigterm_stops_cleanly(self):
        """SIGTERM stops a tracker cleanly: it logs the signal and saves its state, with no traceback."""
        t1 = yield self.start_tracker("t1")
        yield t1.stop(signal.SIGTERM)
        # twistd shuts down, then re-raises the signal so the exit status tells why.
        self.assertEqual(t1.exit_signal, signal.SIGTERM)
        self.assertIn("Received SIGTERM", t1.text)
        self.assertIn("stopped; state saved", t1.text)
        self.assertNotIn("Traceback", t1.text)

    @defer.inlineCallbacks
    def test_key_is_private_and_reused(self):
        """The node key file is mode 0600 and is reused on restart, so the node id stays the same."""
        t1 = yield self.start_tracker("t1")
        key_path = os.path.join(t1.data_dir, "private", "node.key")
        self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)
        yield t1.stop()
        again = yield self.start_tracker("t1")
        self.assertEqual(again.node_id, t1.node_id)

    @defer.inlineCallbacks
    def test_port_in_use_is_one_line(self):
        """A tracker whose port is taken exits non-zero with the one line 'Address already in use', no traceback."""
        t1 = yield self.start_tracker("t1")
        clash = self.daemon("orb-tracker", "t2", "--listen", f"tcp:{t1.info['wire']}:interface=127.0.0.1",
                            "--http", "tcp:0:interface=127.0.0.1")
        try:
            yield clash.start()
        except Exception:
            pass
        code = yield clash.exited
        self.assertNotEqual(code, 0)
        self.assertNotIn("Traceback", clash.text)
        self.assertIn("Address already in use", clash.text)
        self.assertEqual(len([line for line in clash.text.splitlines() if line.strip()]), 1)

    @defer.inlineCallbacks
    def test_bad_options_are_one_line(self):
        """A bad option makes the tracker exit 1 with a one-line message naming the problem, no traceback."""
        for args, expected in (
            (("--listen", "bogus:1"), "only tcp:, tcp6: and unix: endpoints are supported"),
            (("--join", "nonsense"), "is not HOST:PORT"),
            (("--network", "Bad Name!"), "network name"),
            (("--peer-ttl", "-3"), "--peer-ttl must be positive"),
        ):
            daemon = self.daemon("orb-tracker", "bad", *args)
            try:
                yield daemon.start()
            except Exception:
                pass
            code = yield daemon.exited
            self.assertEqual(code, 1, args)
            self.assertIn(expected, daemon.text)
            self.assertNotIn("Traceback", daemon.text)
            self.assertEqual(len(daemon.text.strip().splitlines()), 1, daemon.text)

    @defer.inlineCallbacks
    def test_unwritable_data_dir(self):
        """A peer whose data dir cannot be created exits 1 with a one-line message about the data dir."""
        blocker = os.path.join(self.base_dir(), "file")
        with open(blocker, "w") as f:
            f.write("x")
        daemon = self.daemon("orb-peer", "unused", "--data-dir", os.path.join(blocker, "sub"))
        daemon.data_dir = os.path.join(self.base_dir(), "unused")
        try:
            yield daemon.start()
        except Exception:
            pass
        code = yield daemon.exited
        self.assertEqual(code, 1)
        self.assertIn("data dir", daemon.text)
        self.assertNotIn("Traceback", daemon.text)


class CAModeTests(DaemonTestMixin, TestCase):
    """Admission by a DNS name that a CA vouches for (RFC 7.4, 8.6): --tls-cert on one side, --join-ca on the other."""

    timeout = 120

    def pem(self, name, *certs):
        from cryptography.hazmat.primitives import serialization

        path = os.path.join(self.net.base_dir, name)
        with open(path, "wb") as f:
            f.write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return path

    @defer.inlineCallbacks
    def test_join_ca_admits_the_tracker_that_proves_its_name(self):
        """A tracker told --join-ca localhost:PORT federates with the tracker whose CA-issued certificate names localhost."""
        from tests.test_tls import issue, make_ca

        ca_key, ca_cert = make_ca()
        t1_key = NodeKey.load_or_create(os.path.join(self.net.base_dir, "t1"))
        chain = self.pem("t1-chain.pem", issue(ca_key, ca_cert, t1_key.private_key, "localhost"), ca_cert)
        t1 = yield self.start_tracker("t1", "--tls-cert", chain, "--admit", self.net.node_id_of("t2"))
        t2 = yield self.start_tracker("t2", "--ca", self.pem("ca.pem", ca_cert), "--join-ca", f"localhost:{t1.wire[1]}")

        @defer.inlineCallbacks
        def t2_lists_t1():
            code, listing = yield t2.get_json("/api/v1/trackers")
            return t1.node_id in {t["node_id"] for t in listing["trackers"]}

        yield eventually(t2_lists_t1, what="t1's own record at t2, by federation")
        self.assertEqual((t1.tracebacks, t2.tracebacks), (0, 0))

    @defer.inlineCallbacks
    def test_a_tracker_without_the_name_is_not_admitted(self):
        """--join-ca to a tracker whose certificate is self-signed fails the TLS check: no link, no traceback."""
        from tests.test_tls import make_ca

        _, ca_cert = make_ca()
        t1 = yield self.start_tracker("t1", "--admit", self.net.node_id_of("t2"))
        t2 = yield self.start_tracker("t2", "--ca", self.pem("ca.pem", ca_cert), "--join-ca", f"localhost:{t1.wire[1]}")
        yield sleep(3.0)
        code, listing = yield t2.get_json("/api/v1/trackers")
        self.assertEqual({t["node_id"] for t in listing["trackers"]}, {t2.node_id})
        self.assertTrue(t2.running)
        self.assertEqual((t1.tracebacks, t2.tracebacks), (0, 0))

    @defer.inlineCallbacks
    def test_a_certificate_for_another_key_stops_the_start(self):
        """--tls-cert whose certificate carries another key stops the daemon at start with a one-line reason."""
        from tests.test_tls import issue, make_ca

        ca_key, ca_cert = make_ca()
        chain = self.pem("wrong.pem", issue(ca_key, ca_cert, NodeKey.generate().private_key, "localhost"))
        daemon = self.daemon("orb-tracker", "t1", "--listen", "tcp:0:interface=127.0.0.1", "--http",
                             "tcp:0:interface=127.0.0.1", "--tls-cert", chain)
        with self.assertRaises(Exception):
            yield daemon.start()
        self.assertIn("does not carry this node's key", daemon.text)
