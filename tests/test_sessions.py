"""
The session table on its own, with stand-in protocols and a task.Clock:
admission and refusal, dispatch by message type, misbehaviour scoring and
discouragement. Real wires are covered by test_tracker_core,
test_peer_core, test_adapter and test_network.
"""

import os
import random

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.net.addrbook import AddressBook
from orb.net.periodic import Periodic
from orb.net.sessions import (
    MISBEHAVIOUR_LIMIT,
    Dial,
    LocalNode,
    Purpose,
    Refusal,
    SessionTable,
    _Violation,
    violation,
)
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.errors import DecodeError
from orb.protocol.messages import MessageType
from orb.protocol.session import RemoteInfo, node_id_for


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
    dial: object = None


class StubProtocol:
    """Stands in for OrbProtocol: records what the table sends and closes."""

    def __init__(self, host="127.0.0.1", roles=Role.PEER):
        self.transport = StubTransport(host)
        self.factory = StubFactory()
        self.sent = []
        self.closed = None
        self.ready = True
        self.rtt_ms = None
        key = os.urandom(32)
        self.remote = RemoteInfo(node_id_for(key), key, int(roles), 0, 1, (), m.Endpoint("127.0.0.1", 1), "t", 0)

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def close(self, text="", code=ErrorCode.SHUTDOWN):
        self.closed = (text, code)
        self.transport.loseConnection()


def make_table(clock, max_inbound=117):
    """A session table whose address book has a fixed bucket key and rng, so that
    where addresses land (and whether two collide) is the same on every run."""
    local = LocalNode(NodeKey.generate(), Role.PEER, advertise=("127.0.0.1", 7401))
    book = AddressBook(clock, key=b"\x42" * 32, rng=random.Random(7), allow_loopback=True, allow_private=True)
    return SessionTable(clock, local, book, max_inbound=max_inbound)


def connect(table, protocol):
    table.session_ready(protocol)
    return protocol


class MisbehaviourTests(SynchronousTestCase):
    def test_minor_violations_add_up(self):
        """Ten small violations cost a remote its session and a 24 h ban; nine do not."""
        table = make_table(Clock())
        p = connect(table, StubProtocol(host="203.0.113.9"))
        for _ in range(MISBEHAVIOUR_LIMIT // 10 - 1):
            table.misbehaved(p, _Violation(ErrorCode.UNEXPECTED, "unexpected"))  # 10 points each
        self.assertFalse(p.transport.lost)
        table.misbehaved(p, _Violation(ErrorCode.UNEXPECTED, "unexpected"))
        self.assertTrue(p.transport.lost)
        self.assertTrue(table.is_banned(p.remote.node_id))

    def test_discouraged_remote_is_told_why_before_the_close(self):
        """A fatal close first sends ERROR(denied), as RFC Section 6.8 requires, not a silent close."""
        table = make_table(Clock())
        p = connect(table, StubProtocol(host="203.0.113.9"))
        table.misbehaved(p, violation("DELTA from a non-tracker", ErrorCode.DENIED))
        self.assertEqual(p.closed, ("discouraged: misbehaviour", ErrorCode.DENIED))

    def test_fatal_error_discourages_ip_and_node(self):
        """A fatal error bans the address and the node id for 24 h, from any address."""
        clock = Clock()
        table = make_table(clock)
        p = connect(table, StubProtocol(host="203.0.113.9"))
        table.misbehaved(p, DecodeError("garbage"))
        self.assertTrue(p.transport.lost)
        self.assertTrue(table.addrbook.is_discouraged("203.0.113.9"))
        again = StubProtocol(host="198.51.100.1")
        again.remote = p.remote
        table.session_lost(p, None)
        table.session_ready(again)
        self.assertEqual(again.closed, ("discouraged", ErrorCode.DENIED))
        clock.advance(24 * 3600 + 1)
        self.assertFalse(table.addrbook.is_discouraged("203.0.113.9"))
        self.assertFalse(table.is_banned(p.remote.node_id))

    def test_loopback_is_never_discouraged_by_address(self):
        """All test nodes share 127.0.0.1: the node id is banned, not the address."""
        table = make_table(Clock())
        p = connect(table, StubProtocol(host="127.0.0.1"))
        table.misbehaved(p, DecodeError("garbage"))
        self.assertFalse(table.addrbook.is_discouraged("127.0.0.1"))
        honest = connect(table, StubProtocol(host="127.0.0.1"))
        self.assertIsNone(honest.closed)
        self.assertIn(honest.remote.node_id, table)


class RefusalTests(SynchronousTestCase):
    def test_duplicate_session_is_refused_busy(self):
        """A second session from the same node id gets ERROR(busy); the first stays."""
        table = make_table(Clock())
        first = connect(table, StubProtocol())
        second = StubProtocol()
        second.remote = first.remote
        table.session_ready(second)
        self.assertEqual(second.closed, ("duplicate session", ErrorCode.BUSY))
        self.assertIs(table.get(first.remote.node_id).protocol, first)

    def test_inbound_cap(self):
        """Inbound sessions over --max-inbound are refused with ERROR(busy)."""
        table = make_table(Clock(), max_inbound=2)
        accepted = [connect(table, StubProtocol()) for _ in range(2)]
        extra = connect(table, StubProtocol())
        self.assertTrue(all(p.closed is None for p in accepted))
        self.assertEqual(extra.closed, ("too many inbound connections", ErrorCode.BUSY))

    def test_inbound_slot_is_free_again_once_a_session_goes(self):
        """At the inbound cap, a lost inbound session (not a refused or outbound one) frees a slot."""
        table = make_table(Clock(), max_inbound=2)
        first = connect(table, StubProtocol())
        connect(table, StubProtocol())
        refused = connect(table, StubProtocol())
        outbound = StubProtocol()
        outbound.factory = StubFactory(dial=Dial("127.0.0.1", 7402, Purpose.REGULAR))
        connect(table, outbound)
        table.session_lost(refused, None)
        table.session_lost(outbound, None)
        self.assertIsNotNone(table.pre_handshake_refusal("10.0.0.1"))
        table.session_lost(first, None)
        self.assertEqual((table.inbound_count(), table.pre_handshake_refusal("10.0.0.1")), (1, None))
        self.assertIsNone(connect(table, StubProtocol()).closed)

    def test_admission_checks_run_first(self):
        """A role's admission check turns a session away with its own reason and code."""
        table = make_table(Clock())
        table.admission.append(lambda record: Refusal("not today", ErrorCode.SHUTDOWN))
        p = connect(table, StubProtocol())
        self.assertEqual(p.closed, ("not today", ErrorCode.SHUTDOWN))
        self.assertNotIn(p.remote.node_id, table)

    def test_listeners_hear_sessions_come_and_go(self):
        """Components subscribed to the table see each admitted session once, and its loss."""
        table = make_table(Clock())
        seen = []
        table.ready_listeners.append(lambda r: seen.append(("ready", r.node_id)))
        table.lost_listeners.append(lambda r: seen.append(("lost", r.node_id)))
        p = connect(table, StubProtocol())
        table.session_lost(p, None)
        self.assertEqual(seen, [("ready", p.remote.node_id), ("lost", p.remote.node_id)])


class DispatchTests(SynchronousTestCase):
    def test_handler_is_found_by_message_type(self):
        """A message reaches the handler registered for its type, with its record and request id."""
        table = make_table(Clock())
        got = []
        table.handlers[MessageType.GETADDR] = lambda record, message, rid: got.append((record.node_id, rid))
        p = connect(table, StubProtocol())
        table.message_received(p, m.GetAddr(), 7)
        self.assertEqual(got, [(p.remote.node_id, 7)])

    def test_unserved_type_is_unsupported_and_cheap(self):
        """A v1 type this node does not serve gets ERROR(unsupported); ten of them do not get a ban."""
        table = make_table(Clock())
        p = connect(table, StubProtocol())
        for request_id in range(1, 11):
            table.message_received(p, m.Lookup(fid=b"\x01", max_replicas=1), request_id)
        error, response_to = p.sent[-1]
        self.assertEqual((error.code, response_to), (ErrorCode.UNSUPPORTED, 10))
        self.assertIsNone(p.closed)
        self.assertFalse(table.is_banned(p.remote.node_id))

    def test_a_failing_handler_answers_internal_and_the_session_goes_on(self):
        """A bug in a handler answers ERROR(internal), is logged, and serves the next message."""
        table = make_table(Clock())
        calls = []

        def broken(record, message, rid):
            calls.append(rid)
            raise RuntimeError("bug")

        table.handlers[MessageType.GETADDR] = broken
        p = connect(table, StubProtocol())
        table.message_received(p, m.GetAddr(), 3)
        table.message_received(p, m.GetAddr(), 4)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual([(e.code, rid) for e, rid in p.sent], [(ErrorCode.INTERNAL, 3), (ErrorCode.INTERNAL, 4)])
        self.assertEqual(calls, [3, 4])
        self.assertIsNone(p.closed)

    def test_refused_session_is_not_served(self):
        """Messages on a session the table refused reach no handler."""
        table = make_table(Clock(), max_inbound=0)
        got = []
        table.handlers[MessageType.GETADDR] = lambda *a: got.append(a)
        p = connect(table, StubProtocol())
        table.message_received(p, m.GetAddr(), 1)
        self.assertEqual(got, [])


class PeriodicTests(SynchronousTestCase):
    def test_a_failing_job_keeps_its_loop(self):
        """A periodic job that raises is logged and runs again on the next beat."""
        clock = Clock()
        runs = []

        def job():
            runs.append(clock.seconds())
            raise ValueError("boom")

        periodic = Periodic(clock)
        periodic.every(1.0, job)
        clock.advance(1.0)
        clock.advance(1.0)
        periodic.stop()
        clock.advance(5.0)
        self.assertEqual(runs, [0.0, 1.0, 2.0])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 3)
