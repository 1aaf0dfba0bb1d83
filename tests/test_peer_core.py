"""
The peer core, driven without sockets: real cores joined by in-memory
transports on a task.Clock (tests/_memnet.py). Joining, outbound targets,
reachability, re-homing, and advertising an observed address.
"""

from twisted.trial.unittest import SynchronousTestCase

from orb.net.sessions import Reachability
from orb.protocol.messages import MessageType
from tests._memnet import PORT, MemoryNet


class ConnectionTests(SynchronousTestCase):
    def setUp(self):
        self.net = MemoryNet()
        self.trackers = [self.net.tracker("10.1.0.1"), self.net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])]
        self.net.run(3)

    def test_peer_keeps_its_outbound_tracker_sessions(self):
        """A peer given one tracker finds the other through gossip and keeps two tracker sessions."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(10)
        self.assertEqual(peer.status()["outbound_trackers"], 2)

    def test_peers_find_each_other_one_per_group(self):
        """Peers learn each other from the trackers and dial at most one outbound peer per /16."""
        peers = [self.net.peer(f"10.{20 + i // 2}.{i}.1", trackers=[("10.1.0.1", PORT)]) for i in range(12)]
        self.net.run(60)
        for peer in peers:
            outbound = peer.table.outbound(trackers=False)
            self.assertGreaterEqual(len(outbound), 1)
            groups = [r.ip.split(".")[:2] for r in outbound]
            self.assertEqual(len(groups), len({tuple(g) for g in groups}))
        self.assertGreaterEqual(sum(len(p.table.outbound(trackers=False)) for p in peers), 2 * len(peers))

    def test_a_tracker_that_appears_later_is_found_without_relay(self):
        """A peer short of trackers asks its tracker again, so it finds a tracker no ADDR relay told it about."""
        net = MemoryNet()
        t1 = net.tracker("10.1.0.1")
        peer = net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_peers=0)
        net.run(3)
        t1.table.handlers[MessageType.ADDR] = lambda record, message, rid: t1.gossip.learn(record, message.entries,
                                                                                            relay=False)
        t2 = net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])
        net.run(20)
        self.assertIn(t2.node_id, {r.node_id for r in peer.table.outbound(trackers=True)})

    def test_a_second_tracker_is_found_even_if_the_address_book_drops_it(self):
        """Trackers our tracker names are kept beside the address book: a bucket collision cannot hide them."""
        net = MemoryNet()
        t1 = net.tracker("10.1.0.1")
        t2 = net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])
        net.run(3)
        peer = net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_peers=0)
        peer.addrbook.add = lambda addrs, source, now=None: 0  # every entry lost, as on a collision
        net.run(5)
        self.assertEqual({r.node_id for r in peer.table.outbound(trackers=True)}, {t1.node_id, t2.node_id})

    def test_dial_back_is_refused_after_it_proves_reachability(self):
        """The tracker's dial-back session is refused with SHUTDOWN and the peer turns reachable."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        self.assertIs(peer.reachability, Reachability.REACHABLE)
        self.assertEqual(len(peer.table.records()), 1)  # the dial-back did not become a session

    def test_relayed_peer_keeps_two_tracker_sessions(self):
        """A peer nobody can dial is relayed, and keeps at least two tracker sessions even when asked for one."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1, listen=False)
        self.net.run(20)
        self.assertIs(peer.reachability, Reachability.RELAYED)
        self.assertEqual(peer.status()["outbound_trackers"], 2)

    def test_peer_rehomes_when_its_primary_dies(self):
        """When the primary tracker dies the peer announces to its other tracker, which becomes its home."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)])
        self.net.run(10)
        first = peer.homing.primary.node_id
        survivor = next(t for t in self.trackers if t.node_id != first)
        self.net.kill(next(t for t in self.trackers if t.node_id == first))
        self.net.run(1)
        self.assertEqual(peer.homing.primary.node_id, survivor.node_id)
        self.assertEqual(survivor.registry.peer(peer.node_id).home, survivor.node_id)

    def test_wildcard_listener_advertises_the_observed_address(self):
        """A peer listening on a wildcard advertises the address its tracker sees, at its own port."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], advertise=False)
        peer.local.listening = ("0.0.0.0", PORT)
        self.net.run(2)
        self.assertEqual(peer.local.advertise, ("10.2.0.1", PORT))

    def test_hello_ack_lists_where_the_tracker_listens(self):
        """The tracker's HELLO_ACK carries the address it accepts connections on, as HELLO does."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        record = peer.table.get(self.trackers[0].node_id)
        self.assertEqual([(e.host, e.port) for e in record.remote.listen], [("10.1.0.1", PORT)])

    def test_peer_serves_only_gossip(self):
        """The peer's dispatch table has GETADDR and ADDR; the rest is answered unsupported."""
        self.assertEqual(set(self.net.peer("10.2.0.1").table.handlers), {MessageType.GETADDR, MessageType.ADDR})

    def test_a_stopped_peer_says_goodbye(self):
        """Stopping a peer closes its sessions at once: the tracker does not wait for a timeout."""
        peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], outbound_trackers=1)
        self.net.run(2)
        tracker = self.trackers[0]
        self.assertIn(peer.node_id, tracker.table)
        self.net.kill(peer)
        self.assertNotIn(peer.node_id, tracker.table)
