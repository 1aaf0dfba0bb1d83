"""
The node core's logic around sessions, with stand-in protocols and a
task.Clock: misbehaviour and discouragement, ADDR relay, GETADDR answers,
session refusal. The real wire is covered by test_network and test_adapter.
"""

import os

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.node import MISBEHAVIOUR_LIMIT, Node, NodeConfig, _Violation
from orb.net.addrbook import AddressBook
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.errors import DecodeError
from orb.protocol.session import RemoteInfo


class StubTransport:
    def __init__(self, host):
        self.host = host
        self.lost = False

    def getPeer(self):
        return IPv4Address("TCP", self.host, 40000)

    def loseConnection(self):
        self.lost = True


@attrs.define
class StubFactory:
    initiator: bool = False
    purpose: str = "regular"
    ready: object = None


class StubProtocol:
    """Stands in for OrbProtocol: records what the node sends."""

    def __init__(self, host="127.0.0.1", roles=Role.PEER, initiator=False):
        self.transport = StubTransport(host)
        self.factory = StubFactory(initiator=initiator)
        self.sent = []
        self.closed = None
        self.ready = True
        key = os.urandom(32)
        from orb.protocol.session import node_id_for

        self.remote = RemoteInfo(node_id_for(key), key, int(roles), 0, 1, (), m.Endpoint("127.0.0.1", 1), "t", 0)

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def close(self, text="", code=ErrorCode.SHUTDOWN):
        self.closed = (text, code)

    def disconnect(self):
        self.transport.loseConnection()


def make_node(clock, cls=Node):
    data_dir = os.path.abspath(os.path.join("node-data", os.urandom(4).hex()))
    node = cls(NodeConfig(data_dir=data_dir, advertise=("127.0.0.1", 7401)), clock, key=NodeKey.generate())
    node.addrbook = AddressBook(clock, allow_loopback=True, allow_private=True)
    return node


def connect(node, protocol):
    node.session_ready(protocol)
    return protocol


class MisbehaviourTests(SynchronousTestCase):
    def test_minor_violations_add_up(self):
        clock = Clock()
        node = make_node(clock)
        p = connect(node, StubProtocol(host="203.0.113.9"))
        for _ in range(MISBEHAVIOUR_LIMIT // 10 - 1):
            node.misbehaved(p, _Violation(ErrorCode.UNEXPECTED))  # 10 points each
        self.assertFalse(p.transport.lost)
        node.misbehaved(p, _Violation(ErrorCode.UNEXPECTED))
        self.assertTrue(p.transport.lost)
        self.assertIn(p.remote.node_id, node.banned_ids)

    def test_fatal_error_discourages_ip_and_node(self):
        clock = Clock()
        node = make_node(clock)
        p = connect(node, StubProtocol(host="203.0.113.9"))
        node.misbehaved(p, DecodeError("garbage"))
        self.assertTrue(p.transport.lost)
        self.assertTrue(node.addrbook.is_discouraged("203.0.113.9"))
        self.assertIn(p.remote.node_id, node.banned_ids)
        # The same node id is refused on its next attempt, from anywhere.
        again = StubProtocol(host="198.51.100.1")
        again.remote = p.remote
        node.session_lost(p, None)
        node.session_ready(again)
        self.assertEqual(again.closed, ("discouraged", ErrorCode.DENIED))
        # Discouragement ends.
        clock.advance(24 * 3600 + 1)
        self.assertFalse(node.addrbook.is_discouraged("203.0.113.9"))

    def test_loopback_is_never_discouraged_by_address(self):
        """All test nodes share 127.0.0.1: ban the node id, not the address."""
        clock = Clock()
        node = make_node(clock)
        p = connect(node, StubProtocol(host="127.0.0.1"))
        node.misbehaved(p, DecodeError("garbage"))
        self.assertFalse(node.addrbook.is_discouraged("127.0.0.1"))
        honest = connect(node, StubProtocol(host="127.0.0.1"))
        self.assertIsNone(honest.closed)
        self.assertIn(honest.remote.node_id, node.sessions)


class RefusalTests(SynchronousTestCase):
    def test_duplicate_session_is_refused_busy(self):
        node = make_node(Clock())
        first = connect(node, StubProtocol())
        second = StubProtocol()
        second.remote = first.remote
        node.session_ready(second)
        self.assertEqual(second.closed, ("duplicate session", ErrorCode.BUSY))
        self.assertIs(node.sessions[first.remote.node_id], first)

    def test_inbound_cap(self):
        node = make_node(Clock())
        node.config = attrs.evolve(node.config, max_inbound=2)
        accepted = [connect(node, StubProtocol()) for _ in range(2)]
        extra = connect(node, StubProtocol())
        self.assertTrue(all(p.closed is None for p in accepted))
        self.assertEqual(extra.closed, ("too many inbound connections", ErrorCode.BUSY))

    def test_unserved_message_is_refused(self):
        node = make_node(Clock())
        p = connect(node, StubProtocol())
        node.message_received(p, m.Lookup(fid=b"\x01", max_replicas=1), 9)
        (error, response_to) = p.sent[-1]
        self.assertEqual((error.code, response_to), (ErrorCode.UNEXPECTED, 9))


class GossipTests(SynchronousTestCase):
    def entries(self, n, clock, age_s=0):
        ts = int(clock.seconds()) - age_s
        return tuple(m.AddrEntry(ts, f"10.{i}.0.1", 7400, int(Role.PEER), os.urandom(32)) for i in range(n))

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.node = make_node(self.clock)
        self.source = connect(self.node, StubProtocol())
        self.others = [connect(self.node, StubProtocol()) for _ in range(5)]

    def relayed_to(self):
        return [p for p in self.others if any(isinstance(msg, m.Addr) for msg, _ in p.sent)]

    def test_fresh_addresses_go_to_two_sessions(self):
        self.node.rx_addr(self.source, m.Addr(entries=self.entries(3, self.clock)), 0)
        self.assertEqual(len(self.relayed_to()), 2)
        self.assertEqual(len(self.node.addrbook), 3)
        self.assertEqual(self.source.sent, [])  # never back to the sender

    def test_stale_addresses_are_kept_not_relayed(self):
        self.node.rx_addr(self.source, m.Addr(entries=self.entries(3, self.clock, age_s=3600)), 0)
        self.assertEqual(self.relayed_to(), [])
        self.assertEqual(len(self.node.addrbook), 3)

    def test_big_addr_is_not_relayed(self):
        self.node.rx_addr(self.source, m.Addr(entries=self.entries(11, self.clock)), 0)
        self.assertEqual(self.relayed_to(), [])

    def test_own_address_is_ignored(self):
        me = m.AddrEntry(int(self.clock.seconds()), "10.9.9.9", 7401, 1, self.node.node_id)
        self.node.rx_addr(self.source, m.Addr(entries=(me,)), 0)
        self.assertEqual(len(self.node.addrbook), 0)

    def test_peer_answers_getaddr_once_per_session(self):
        self.node.rx_addr(self.source, m.Addr(entries=self.entries(8, self.clock)), 0)
        asker = connect(self.node, StubProtocol())
        self.node.rx_getaddr(asker, m.GetAddr(), 4)
        self.node.rx_getaddr(asker, m.GetAddr(), 5)
        first, second = [msg for msg, _ in asker.sent]
        self.assertGreater(len(first.entries), 1)
        self.assertIn(self.node.node_id, [e.node_id for e in first.entries])  # it advertises itself
        self.assertEqual(second.entries, ())
