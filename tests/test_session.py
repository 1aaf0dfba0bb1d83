"""
The sans-I/O session: handshake, negotiation, timeouts and keepalive on
a task.Clock, limits, and refusal of bad input. No sockets.
"""

import os

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode, Feature, Role
from orb.protocol.frame import HEADER, Flag, FrameDecoder, encode_frame
from orb.protocol.session import (
    AddrThrottled,
    ErrorReceived,
    HandshakeCompleted,
    LocalIdentity,
    MessageReceived,
    Misbehaved,
    RttMeasured,
    Session,
    SessionConfig,
    SessionFailed,
    SessionNotReady,
    State,
    node_id_for,
)

CONFIG = SessionConfig(network="devnet")
PEER_ADDR = m.Endpoint("127.0.0.1", 50123)
TRACKER_ADDR = m.Endpoint("127.0.0.1", 7400)


def identity(roles=Role.PEER, **kw):
    return LocalIdentity(os.urandom(32), int(roles), **kw)


def make_pair(clock=None, client_kw=None, server_kw=None, client_identity=None, server_identity=None):
    clock = clock or Clock()
    client = Session(
        client_identity or identity(Role.PEER), clock, initiator=True, remote_address=TRACKER_ADDR,
        **{"config": CONFIG, **(client_kw or {})},
    )
    server = Session(
        server_identity or identity(Role.TRACKER), clock, initiator=False, remote_address=PEER_ADDR,
        **{"config": CONFIG, **(server_kw or {})},
    )
    client.connection_made()
    server.connection_made()
    return clock, client, server


def handshake(client, server):
    server_events = server.feed(client.data_to_send())
    client_events = client.feed(server.data_to_send())
    return client_events, server_events


def ready_pair(**kw):
    clock, client, server = make_pair(**kw)
    handshake(client, server)
    return clock, client, server


def decode_all(session, data):
    """Decode what a session sent, as its remote would see it."""
    return FrameDecoder(session.config.magic).feed(data)


def sent_errors(session):
    return [f.message for f in decode_all(session, session.data_to_send()) if isinstance(f.message, m.Error)]


class HandshakeTests(SynchronousTestCase):
    def test_handshake_completes_on_both_sides(self):
        clock, client, server = make_pair()
        client_events, server_events = handshake(client, server)
        self.assertEqual(client.state, State.READY)
        self.assertEqual(server.state, State.READY)
        (done,) = client_events
        self.assertIsInstance(done, HandshakeCompleted)
        self.assertEqual(done.remote.node_id, server.identity.node_id)
        self.assertEqual(server_events[0].remote.node_id, client.identity.node_id)

    def test_observed_address(self):
        """A peer learns its address as the tracker sees it from HELLO_ACK."""
        _, client, server = ready_pair()
        self.assertEqual(client.remote.observed_us, PEER_ADDR)
        self.assertEqual(server.remote.observed_us, TRACKER_ADDR)

    def test_features_are_negotiated(self):
        _, client, server = ready_pair(
            client_identity=identity(features=int(Feature.RELAY | Feature.CHUNKED_PACKAGE)),
            server_identity=identity(Role.TRACKER, features=int(Feature.RELAY | Feature.FEDERATION)),
        )
        self.assertEqual(client.remote.features, Feature.RELAY)
        self.assertEqual(server.remote.features, Feature.RELAY)

    def test_highest_common_version(self):
        clock, client, server = make_pair(
            client_kw={"config": attrs.evolve(CONFIG, versions=(1, 2, 3))},
            server_kw={"config": attrs.evolve(CONFIG, versions=(1, 2))},
        )
        handshake(client, server)
        self.assertEqual((client.version, server.version), (2, 2))
        self.assertEqual(client.remote.version, 2)

    def test_no_common_version(self):
        clock, client, server = make_pair(
            client_kw={"config": attrs.evolve(CONFIG, versions=(1, 2))},
            server_kw={"config": attrs.evolve(CONFIG, versions=(1, 3))},
        )
        client_hello = decode_all(client, client.data_to_send())[0].message
        # The client advertises 1 and 2; pretend it only speaks 2.
        hello = attrs.evolve(client_hello, versions=(2,))
        (failed,) = server.feed(encode_frame(CONFIG.magic, hello))
        self.assertIsInstance(failed, SessionFailed)
        self.assertEqual(failed.error.code, ErrorCode.VERSION)
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual([e.code for e in sent_errors(server)], [ErrorCode.VERSION])

    def test_anything_but_hello_first_is_refused(self):
        clock, client, server = make_pair()
        client.data_to_send()
        (failed,) = server.feed(encode_frame(CONFIG.magic, m.GetAddr(), 1))
        self.assertIsInstance(failed, SessionFailed)
        self.assertEqual(failed.error.code, ErrorCode.UNEXPECTED)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.UNEXPECTED)
        self.assertEqual(server.state, State.ERROR)

    def test_self_connection_by_nonce(self):
        clock = Clock()
        nonces = set()
        me = identity()
        client = Session(me, clock, initiator=True, remote_address=TRACKER_ADDR, config=CONFIG)
        nonces.add(client.local_nonce)
        server = Session(identity(), clock, initiator=False, remote_address=PEER_ADDR, config=CONFIG,
                         is_own_nonce=nonces.__contains__)
        client.connection_made()
        server.connection_made()
        (failed,) = server.feed(client.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.SELF_CONNECTION)

    def test_self_connection_by_node_id(self):
        me = identity()
        clock, client, server = make_pair(client_identity=me, server_identity=me)
        (failed,) = server.feed(client.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.SELF_CONNECTION)

    def test_node_id_must_hash_the_key(self):
        clock, client, server = make_pair()
        hello = decode_all(client, client.data_to_send())[0].message
        forged = attrs.evolve(hello, node_id=b"\x01" * 32)
        (failed,) = server.feed(encode_frame(CONFIG.magic, forged))
        self.assertEqual(failed.error.code, ErrorCode.IDENTITY)

    def test_certificate_key_must_match_hello(self):
        clock, client, server = make_pair()
        server.certificate_key = os.urandom(32)  # what TLS saw differs from HELLO
        (failed,) = server.feed(client.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.IDENTITY)
        self.assertIn("certificate", failed.error.message)

    def test_certificate_key_matching_hello_passes(self):
        clock, client, server = make_pair()
        server.certificate_key = client.identity.public_key
        (done,) = server.feed(client.data_to_send())
        self.assertIsInstance(done, HandshakeCompleted)

    def test_dialled_node_id_must_match(self):
        clock, client, server = make_pair(client_kw={"expected_node_id": node_id_for(b"\x00" * 32)})
        server.feed(client.data_to_send())
        (failed,) = client.feed(server.data_to_send())
        self.assertEqual(failed.error.code, ErrorCode.IDENTITY)

    def test_handshake_timeout(self):
        clock, client, server = make_pair()
        self.assertEqual(server.next_deadline(), 10.0)
        clock.advance(9.9)
        self.assertEqual(server.tick(), [])
        clock.advance(0.1)
        (failed,) = server.tick()
        self.assertEqual(failed.error.code, ErrorCode.TIMEOUT)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.TIMEOUT)

    def test_send_before_ready_is_our_bug(self):
        clock, client, server = make_pair()
        self.assertRaises(SessionNotReady, client.send, m.GetAddr())


class KeepaliveTests(SynchronousTestCase):
    def test_ping_after_idle_and_rtt(self):
        clock, client, server = ready_pair()
        self.assertEqual(client.next_deadline(), 30.0)
        clock.advance(30)
        client.tick()
        (ping,) = decode_all(client, client.data_to_send())
        self.assertIsInstance(ping.message, m.Ping)
        self.assertEqual(server.feed(encode_frame(CONFIG.magic, ping.message, ping.request_id)), [])
        clock.advance(0.025)
        (rtt,) = client.feed(server.data_to_send())
        self.assertIsInstance(rtt, RttMeasured)
        self.assertAlmostEqual(rtt.rtt_ms, 25.0)
        self.assertEqual(client.state, State.READY)

    def test_idle_timeout_closes(self):
        clock, client, server = ready_pair()
        clock.advance(30)
        client.tick()
        client.data_to_send()  # the PING goes unanswered
        self.assertEqual(client.next_deadline(), 90.0)
        clock.advance(60)
        (failed,) = client.tick()
        self.assertEqual(failed.error.code, ErrorCode.TIMEOUT)
        self.assertEqual(client.state, State.ERROR)

    def test_traffic_defers_keepalive(self):
        clock, client, server = ready_pair()
        clock.advance(20)
        client.feed(server.send(m.Announce(load_permille=0, functions=())))
        self.assertEqual(client.next_deadline(), 50.0)


class RequestTests(SynchronousTestCase):
    def test_request_and_response(self):
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01" * 33, max_replicas=2))
        (got,) = server.feed(data)
        self.assertEqual(got, MessageReceived(m.Lookup(fid=b"\x01" * 33, max_replicas=2), request_id, False))
        reply = server.send(m.Peers(fid=b"\x01" * 33, replicas=()), response_to=request_id)
        (answer,) = client.feed(reply)
        self.assertTrue(answer.is_response)
        self.assertEqual(answer.request_id, request_id)
        self.assertEqual(client.pending_requests, 0)

    def test_unsolicited_response_is_refused_but_survived(self):
        clock, client, server = ready_pair()
        (event,) = client.feed(encode_frame(CONFIG.magic, m.Peers(fid=b"\x01", replicas=()), 77, Flag.RESPONSE))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNEXPECTED)
        (err,) = sent_errors(client)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.UNEXPECTED, 77))
        self.assertEqual(client.state, State.READY)

    def test_wrong_response_type(self):
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01", max_replicas=2))
        server.feed(data)
        (event,) = client.feed(server.send(m.Proof(fid=b"\x01", digest=b"\x00" * 32), response_to=request_id))
        self.assertIsInstance(event, Misbehaved)

    def test_in_flight_limit(self):
        clock, client, server = ready_pair(server_kw={"config": attrs.evolve(CONFIG, max_inflight_requests=2)})
        frames = [encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), rid) for rid in (1, 2, 3)]
        events = server.feed(b"".join(frames))
        self.assertEqual([type(e) for e in events], [MessageReceived, MessageReceived, Misbehaved])
        (err,) = sent_errors(server)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.RATE_LIMITED, 3))
        server.send(m.Peers(fid=b"\x01", replicas=()), response_to=1)
        (again,) = server.feed(encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), 4))
        self.assertIsInstance(again, MessageReceived)

    def test_error_response(self):
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Invoke(fid=b"\x01", deadline_ms=1, token=b"", input=b""))
        server.feed(data)
        err = m.Error(code=ErrorCode.NOT_FOUND, ref_request_id=request_id, text="no such fid")
        (event,) = client.feed(server.send(err, response_to=request_id))
        self.assertEqual(event, ErrorReceived(ErrorCode.NOT_FOUND, "no such fid", request_id))
        self.assertEqual(client.pending_requests, 0)


class RequestIdTests(SynchronousTestCase):
    def test_late_response_is_dropped_silently(self):
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01", max_replicas=1))
        server.feed(data)
        client.forget(request_id)  # the caller gave up (timeout)
        self.assertEqual(client.pending_requests, 0)
        late = server.send(m.Peers(fid=b"\x01", replicas=()), response_to=request_id)
        self.assertEqual(client.feed(late), [])
        self.assertEqual(client.data_to_send(), b"")  # no ERROR back: it is not misbehaviour

    def test_request_without_id_is_refused(self):
        clock, client, server = ready_pair()
        (event,) = server.feed(encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), 0))
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.UNEXPECTED)
        self.assertEqual(server.state, State.READY)

    def test_reused_request_id_is_refused(self):
        clock, client, server = ready_pair()
        frame = encode_frame(CONFIG.magic, m.Lookup(fid=b"\x01", max_replicas=1), 7)
        first, second = server.feed(frame + frame)
        self.assertIsInstance(first, MessageReceived)
        self.assertIsInstance(second, Misbehaved)
        (err,) = sent_errors(server)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.UNEXPECTED, 7))

    def test_error_notification_frees_the_request(self):
        clock, client, server = ready_pair()
        request_id, data = client.request(m.Lookup(fid=b"\x01", max_replicas=1))
        error = m.Error(code=ErrorCode.BUSY, ref_request_id=request_id, text="busy")
        (event,) = client.feed(encode_frame(CONFIG.magic, error))  # no RESPONSE flag
        self.assertEqual(event.ref_request_id, request_id)
        self.assertEqual(client.pending_requests, 0)

    def test_error_during_handshake_ends_it(self):
        clock, client, server = make_pair()
        client.data_to_send()
        refusal = m.Error(code=ErrorCode.BUSY, ref_request_id=0, text="too many inbound connections")
        (event,) = client.feed(encode_frame(CONFIG.magic, refusal))
        self.assertEqual(event.code, ErrorCode.BUSY)
        self.assertEqual(client.state, State.ERROR)
        self.assertEqual(client.data_to_send(), b"")  # an ERROR is never answered


class AddrRateTests(SynchronousTestCase):
    def entries(self, n):
        return tuple(m.AddrEntry(1, f"10.0.{i // 250}.{i % 250 + 1}", 7400, 1, os.urandom(32)) for i in range(n))

    def test_unsolicited_flood_is_throttled(self):
        clock, client, server = ready_pair()
        events = client.feed(server.send(m.Addr(entries=self.entries(1000))))
        throttled, delivered = events
        self.assertEqual(throttled, AddrThrottled(999))
        self.assertEqual(len(delivered.message.entries), 1)

    def test_bucket_refills(self):
        clock, client, server = ready_pair()
        client.feed(server.send(m.Addr(entries=self.entries(1))))
        clock.advance(100)  # 0.1 entries/s -> 10 entries
        (delivered,) = [e for e in client.feed(server.send(m.Addr(entries=self.entries(10)))) if isinstance(e, MessageReceived)]
        self.assertEqual(len(delivered.message.entries), 10)

    def test_getaddr_credit_is_not_clamped_by_refill(self):
        clock, client, server = ready_pair()
        client.request(m.GetAddr())
        client.request(m.GetAddr())  # 1 + 2 x 1000 tokens, above the 1000 burst
        clock.advance(10)
        events = client.feed(server.send(m.Addr(entries=self.entries(1000))))
        events += client.feed(server.send(m.Addr(entries=self.entries(1000))))
        self.assertEqual([type(e) for e in events], [MessageReceived, MessageReceived])

    def test_getaddr_answer_is_not_throttled(self):
        clock, client, server = ready_pair()
        request_id, data = client.request(m.GetAddr())
        server.feed(data)
        events = client.feed(server.send(m.Addr(entries=self.entries(1000)), response_to=request_id))
        (delivered,) = events
        self.assertEqual(len(delivered.message.entries), 1000)
        self.assertTrue(delivered.is_response)


class BadInputTests(SynchronousTestCase):
    def test_unknown_type_gets_unsupported_and_session_goes_on(self):
        clock, client, server = ready_pair()
        events = server.feed(HEADER.pack(CONFIG.magic, 1, 0x99, 0, 12, 2) + b"zz")
        self.assertEqual(events[0].error.code, ErrorCode.UNSUPPORTED)
        (err,) = sent_errors(server)
        self.assertEqual((err.code, err.ref_request_id), (ErrorCode.UNSUPPORTED, 12))
        self.assertEqual(server.state, State.READY)
        request_id, data = client.request(m.GetAddr())
        self.assertIsInstance(server.feed(data)[0], MessageReceived)

    def test_oversized_frame(self):
        clock, client, server = ready_pair()
        events = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.INVOKE, 0, 3, 64 * 1024 * 1024))
        self.assertEqual(events[0].error.code, ErrorCode.FRAME_TOO_LARGE)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.FRAME_TOO_LARGE)
        self.assertEqual(server.state, State.ERROR)
        self.assertEqual(server.feed(b"x" * 1000), [])  # refuses more input
        self.assertLess(server._decoder.buffered_bytes, 64)

    def test_wrong_magic_closes_without_error_frame(self):
        clock, client, server = make_pair()
        client.data_to_send()
        (failed,) = server.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(failed.error.code, ErrorCode.NETWORK)
        self.assertEqual(server.data_to_send(), b"")

    def test_malformed_body(self):
        clock, client, server = ready_pair()
        (failed,) = server.feed(HEADER.pack(CONFIG.magic, 1, m.MessageType.PING, 0, 1, 3) + b"abc")
        self.assertEqual(failed.error.code, ErrorCode.MALFORMED)
        self.assertEqual(sent_errors(server)[0].code, ErrorCode.MALFORMED)

    def test_second_hello_is_unexpected_not_fatal(self):
        clock, client, server = make_pair()
        hello = client.data_to_send()
        server.feed(hello)
        (event,) = server.feed(hello)
        self.assertIsInstance(event, Misbehaved)
        self.assertEqual(event.error.code, ErrorCode.UNEXPECTED)
        self.assertEqual(server.state, State.READY)

    def test_frame_version_must_match_session(self):
        clock, client, server = ready_pair()
        frame = bytearray(encode_frame(CONFIG.magic, m.GetAddr(), 1))
        frame[4] = 2  # a version this session did not negotiate (decoder refuses unknown ones)
        (failed,) = server.feed(bytes(frame))
        self.assertEqual(failed.error.code, ErrorCode.VERSION)

    def test_graceful_close(self):
        clock, client, server = ready_pair()
        client.close()
        self.assertEqual(client.state, State.CLOSING)
        (event,) = server.feed(client.data_to_send())
        self.assertEqual(event.code, ErrorCode.SHUTDOWN)
