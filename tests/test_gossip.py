"""
GETADDR/ADDR gossip on its own, with stand-in sessions and a task.Clock:
what is relayed, to how many, what is answered, and how often.
"""

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.net.gossip import Gossip
from orb.protocol import messages as m
from orb.protocol.codes import Role
from tests.test_sessions import StubProtocol, connect, make_table


class GossipTests(SynchronousTestCase):
    def entries(self, n, age_s=0):
        ts = int(self.clock.seconds()) - age_s
        return tuple(m.AddrEntry(ts, f"10.{i // 250}.{i % 250}.1", 7400, int(Role.PEER), self.rng.randbytes(32))
                     for i in range(n))

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.rng = random.Random(3)
        self.table = make_table(self.clock)
        self.gossip = Gossip(self.clock, self.table.local, self.table, self.table.addrbook, random.Random(1))
        self.source = self.record(connect(self.table, StubProtocol()))
        self.others = [connect(self.table, StubProtocol()) for _ in range(5)]

    def record(self, protocol):
        return self.table.get(protocol.remote.node_id)

    def relayed_to(self):
        return [p for p in self.others if any(isinstance(msg, m.Addr) for msg, _ in p.sent)]

    def test_fresh_addresses_go_to_two_sessions(self):
        """A small ADDR of fresh addresses is stored and relayed to two other sessions, never back."""
        self.gossip.on_addr(self.source, m.Addr(entries=self.entries(3)), 0)
        self.assertEqual(len(self.relayed_to()), 2)
        self.assertEqual(len(self.table.addrbook), 3)
        self.assertEqual(self.source.protocol.sent, [])

    def test_an_address_is_relayed_once_a_day(self):
        """The same fresh address arriving again is stored but not relayed again."""
        entries = self.entries(3)
        self.gossip.on_addr(self.source, m.Addr(entries=entries), 0)
        for p in self.others:
            p.sent.clear()
        self.gossip.on_addr(self.source, m.Addr(entries=entries), 0)
        self.assertEqual(self.relayed_to(), [])

    def test_stale_addresses_are_kept_not_relayed(self):
        """Addresses an hour old go into the address book but are not news."""
        self.gossip.on_addr(self.source, m.Addr(entries=self.entries(3, age_s=3600)), 0)
        self.assertEqual(self.relayed_to(), [])
        self.assertEqual(len(self.table.addrbook), 3)

    def test_big_addr_is_not_relayed(self):
        """An ADDR of more than ten entries is an answer, not news: it is not relayed."""
        self.gossip.on_addr(self.source, m.Addr(entries=self.entries(11)), 0)
        self.assertEqual(self.relayed_to(), [])

    def test_own_address_is_ignored(self):
        """Our own node id in an ADDR never enters our address book."""
        me = m.AddrEntry(int(self.clock.seconds()), "10.9.9.9", 7401, 1, self.table.local.node_id)
        self.gossip.on_addr(self.source, m.Addr(entries=(me,)), 0)
        self.assertEqual(len(self.table.addrbook), 0)

    def test_peer_answers_getaddr_once_per_session(self):
        """A peer answers the first GETADDR of a session, with itself included, and the next ones empty."""
        self.gossip.on_addr(self.source, m.Addr(entries=self.entries(8)), 0)
        asker = self.record(connect(self.table, StubProtocol()))
        self.gossip.on_getaddr(asker, m.GetAddr(), 4)
        self.gossip.on_getaddr(asker, m.GetAddr(), 5)
        first, second = [msg for msg, _ in asker.protocol.sent]
        self.assertGreater(len(first.entries), 1)
        self.assertIn(self.table.local.node_id, [e.node_id for e in first.entries])
        self.assertEqual(second.entries, ())

    def test_tracker_answers_again_after_its_interval(self):
        """With a GETADDR interval (a tracker's), a later GETADDR gets a full answer again."""
        self.gossip.getaddr_interval_s = 10.0
        asker = self.record(connect(self.table, StubProtocol()))
        self.gossip.on_getaddr(asker, m.GetAddr(), 4)
        self.clock.advance(11)
        self.gossip.on_getaddr(asker, m.GetAddr(), 5)
        first, second = [msg for msg, _ in asker.protocol.sent]
        self.assertEqual(len(second.entries), len(first.entries))
        self.assertGreater(len(second.entries), 0)

    def test_answer_lists_each_address_once(self):
        """A GETADDR answer carries each (node id, address) pair once, even when the role adds duplicates."""
        extra = self.entries(2)
        self.gossip.extra_addresses = lambda: list(extra) * 3 + self.gossip.self_entries()
        asker = self.record(connect(self.table, StubProtocol()))
        self.gossip.on_getaddr(asker, m.GetAddr(), 4)
        (answer, _), = asker.protocol.sent
        keys = [(e.node_id, e.host, e.port) for e in answer.entries]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(len(keys), 3)

    def test_answers_are_capped_at_1000(self):
        """However many addresses a role offers, an answer holds at most 1000 entries."""
        self.assertEqual(len(m.dedupe_addr_entries(self.entries(1005))), 1000)
