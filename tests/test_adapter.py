"""
The Twisted adapter, joined end to end with iosim (no sockets) and
StringTransport, with time on a task.Clock.
"""

import os

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import messages as m
from orb.net.adapter import OrbFactory, OwnNonces, RemoteError, RequestTimeout, SessionHandler
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.frame import HEADER, FrameDecoder
from orb.protocol.session import LocalIdentity, SessionConfig, State

CONFIG = SessionConfig(network="devnet")


class Recorder(SessionHandler):
    def __init__(self):
        self.ready = []
        self.messages = []
        self.lost = []
        self.misbehaviour = []

    def session_ready(self, protocol):
        self.ready.append(protocol)

    def message_received(self, protocol, message, request_id):
        self.messages.append((message, request_id))
        if isinstance(message, m.GetAddr):
            entry = m.AddrEntry(1, "127.0.0.1", 7400, int(Role.TRACKER), b"\x07" * 32)
            protocol.send(m.Addr(entries=(entry,)), response_to=request_id)

    def session_lost(self, protocol, reason):
        self.lost.append(reason)

    def misbehaved(self, protocol, err):
        self.misbehaviour.append(err)


def make_factory(handler, clock, initiator, own_nonces=None, roles=Role.PEER):
    return OrbFactory(
        LocalIdentity(os.urandom(32), int(roles)),
        handler,
        clock,
        initiator=initiator,
        config=CONFIG,
        own_nonces=own_nonces,
        tls_binding=False,
    )


def connect(clock):
    server_handler, client_handler = Recorder(), Recorder()
    server_factory = make_factory(server_handler, clock, False, roles=Role.TRACKER)
    client_factory = make_factory(client_handler, clock, True)
    client, server, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None), greet=True,
        clock=clock,
    )
    pump.flush()
    return server, client, pump, server_handler, client_handler


class AdapterTests(SynchronousTestCase):
    def test_handshake_and_request(self):
        """After the handshake both sides report the session ready, and a GETADDR request gets its ADDR answer."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        self.assertEqual(len(server_handler.ready), 1)
        self.assertEqual(len(client_handler.ready), 1)
        self.assertTrue(client.ready)
        d = client.request(m.GetAddr())
        pump.flush()
        addr = self.successResultOf(d)
        self.assertEqual(addr.entries[0].port, 7400)

    def test_remote_error_fails_the_request(self):
        """An ERROR sent in answer to a request fails that request with RemoteError, carrying its code and text."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        d = client.request(m.Lookup(fid=b"\x01", max_replicas=1))
        pump.flush()
        (message, request_id), = [x for x in server_handler.messages if isinstance(x[0], m.Lookup)]
        server.send(m.Error(code=ErrorCode.NOT_FOUND, ref_request_id=request_id, text="unknown fid"), response_to=request_id)
        pump.flush()
        failure = self.failureResultOf(d, RemoteError)
        self.assertEqual(failure.value.code, ErrorCode.NOT_FOUND)
        self.assertIn("not_found: unknown fid", str(failure.value))

    def test_request_timeout(self):
        """A request left unanswered fails with RequestTimeout after its timeout and is no longer counted pending."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        d = client.request(m.Lookup(fid=b"\x01", max_replicas=1), timeout_s=5)
        pump.flush()
        self.assertNoResult(d)
        clock.advance(5)
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(client.session.pending_requests, 0)

    def test_cancelled_invoke_sends_cancel(self):
        """Cancelling an INVOKE's Deferred sends CANCEL with its request id, and a late RESULT is dropped silently."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        d = client.request(m.Invoke(fid=b"\x01", deadline_ms=1000, token=b"", input=b"x"))
        pump.flush()
        (_, request_id), = [x for x in server_handler.messages if isinstance(x[0], m.Invoke)]
        d.cancel()
        pump.flush()
        self.failureResultOf(d, defer.CancelledError)
        cancels = [x[0] for x in server_handler.messages if isinstance(x[0], m.Cancel)]
        self.assertEqual(cancels, [m.Cancel(request_id=request_id)])
        self.assertEqual(client.session.pending_requests, 0)
        server.send(m.Result(status=0, queue_us=0, fetch_us=0, boot_us=0, exec_us=0, output=b"", log=b""),
                    response_to=request_id)
        pump.flush()
        self.assertEqual(client_handler.misbehaviour, [])
        self.assertTrue(client.ready)

    def test_timed_out_invoke_sends_cancel(self):
        """An INVOKE that times out at the caller is withdrawn with CANCEL, so the host stops the call."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        d = client.request(m.Invoke(fid=b"\x01", deadline_ms=1000, token=b"", input=b"x"), timeout_s=2)
        pump.flush()
        clock.advance(2)
        pump.flush()
        self.failureResultOf(d, RequestTimeout)
        self.assertEqual(len([x for x in server_handler.messages if isinstance(x[0], m.Cancel)]), 1)

    def test_connection_lost_fails_pending_requests(self):
        """Dropping the connection fails pending requests with ConnectionLost and tells both sides' handlers."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        d = client.request(m.Lookup(fid=b"\x01", max_replicas=1))
        client.transport.loseConnection()
        pump.flush()
        self.failureResultOf(d, error.ConnectionLost)
        self.assertEqual(len(client_handler.lost), 1)
        self.assertEqual(len(server_handler.lost), 1)

    def test_keepalive_over_the_pump(self):
        """An idle session sends keepalive PINGs, learns a round-trip time from the PONG, and stays up."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        clock.advance(30)  # both sides idle: the timers send PINGs
        pump.flush()
        self.assertIsNotNone(client.rtt_ms)
        self.assertTrue(client.ready and server.ready)

    def test_idle_peer_is_dropped(self):
        """A peer that sends nothing for 90 seconds is reported as a TIMEOUT misbehaviour and disconnected."""
        clock = Clock()
        server, client, pump, server_handler, client_handler = connect(clock)
        clock.advance(30)  # both PING, but the pump never delivers anything
        clock.advance(60)
        self.assertEqual(client.session.state, State.ERROR)
        self.assertEqual([e.code for e in client_handler.misbehaviour], [ErrorCode.TIMEOUT])
        pump.flush()
        self.assertEqual(len(client_handler.lost), 1)

    def test_handshake_timeout_disconnects(self):
        """A connection that sends no HELLO within 10 seconds gets a TIMEOUT error frame and is closed."""
        clock = Clock()
        factory = make_factory(Recorder(), clock, False)
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        protocol.makeConnection(transport)
        clock.advance(10)
        self.assertTrue(transport.disconnecting)
        (frame,) = FrameDecoder(CONFIG.magic).feed(transport.value())
        self.assertEqual(frame.message.code, ErrorCode.TIMEOUT)

    def test_self_connection_via_shared_nonces(self):
        """A node that dials itself sees its own nonce: no session opens, SELF_CONNECTION is reported, the link drops."""
        clock = Clock()
        nonces = OwnNonces()
        server_factory = make_factory(Recorder(), clock, False, own_nonces=nonces)
        client_factory = make_factory(Recorder(), clock, True, own_nonces=nonces)
        client, server, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(None), lambda: client_factory.buildProtocol(None), clock=clock
        )
        pump.flush()
        self.assertFalse(server.ready or client.ready)
        self.assertEqual(server.factory.handler.misbehaviour[0].code, ErrorCode.SELF_CONNECTION)
        self.assertEqual(len(server.factory.handler.lost), 1)

    def test_own_nonces_are_bounded(self):
        """The set of our own handshake nonces keeps only the most recent ones, up to its limit."""
        nonces = OwnNonces(limit=3)
        for n in range(10):
            nonces.add(n)
        self.assertEqual([n in nonces for n in range(10)], [False] * 7 + [True] * 3)


class IsolationTests(SynchronousTestCase):
    """One client's garbage never affects another client of the same factory."""

    def test_garbage_client_does_not_affect_honest_one(self):
        """A client announcing an oversized frame is logged and dropped; the listener's other client is still served."""
        clock = Clock()
        handler = Recorder()
        factory = make_factory(handler, clock, False, roles=Role.TRACKER)
        bad = factory.buildProtocol(None)
        bad_transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 6000))
        bad.makeConnection(bad_transport)

        honest_factory = make_factory(Recorder(), clock, True)
        client, server, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None), lambda: honest_factory.buildProtocol(None), clock=clock
        )
        pump.flush()
        with capturedLogs() as events:
            bad.dataReceived(HEADER.pack(CONFIG.magic, 1, 3, 0, 0, 100 * 1024 * 1024))
        self.assertTrue(bad_transport.disconnecting)
        self.assertTrue(any("frame_too_large" in str(e.get("code")) for e in events))
        d = client.request(m.GetAddr())
        pump.flush()
        self.assertEqual(len(self.successResultOf(d).entries), 1)
        self.assertTrue(server.ready)
