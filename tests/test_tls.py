"""
Real-reactor loopback TLS sessions between nodes with fresh keys:
the handshake, an identity mismatch, and a CA-issued tracker certificate
verified with service-identity.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, endpoints, reactor
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from orb.identity import NodeKey
from orb.protocol import messages as m
from orb.net.adapter import OrbFactory, SessionHandler
from orb.protocol.codes import ErrorCode, Role
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.net.tls import NodeTLS, ca_client_options

CONFIG = SessionConfig(network="devnet")


class Handler(SessionHandler):
    def __init__(self):
        self.ready = defer.Deferred()
        self.lost = defer.Deferred()
        self.misbehaviour = []

    def session_ready(self, protocol):
        self.ready.callback(protocol)

    def message_received(self, protocol, message, request_id):
        if isinstance(message, m.GetAddr):
            protocol.send(m.Addr(entries=()), response_to=request_id)

    def session_lost(self, protocol, reason):
        if not self.lost.called:
            self.lost.callback(reason.value if reason is not None else None)

    def misbehaved(self, protocol, err):
        self.misbehaviour.append(err)


def orb_factory(key, handler, initiator, roles=Role.PEER, **kw):
    return OrbFactory(LocalIdentity(key.public_bytes, int(roles)), handler, reactor, initiator=initiator,
                      config=CONFIG, **kw)


def make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ORB throwaway test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(ca_key, ca_cert, subject_key, dns_name, san=True):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca_cert.subject).public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


class LoopbackTLSTests(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def listen(self, server_creator, handler, key):
        factory = TLSMemoryBIOFactory(server_creator, False, orb_factory(key, handler, False, Role.TRACKER))
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def dial(self, port, creator, handler, key, **kw):
        factory = TLSMemoryBIOFactory(creator, True, orb_factory(key, handler, True, **kw))
        protocol = yield endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        self.addCleanup(protocol.transport.abortConnection)
        return protocol

    @defer.inlineCallbacks
    def test_handshake_with_fresh_keys(self):
        """Two nodes with fresh keys complete TLS and the ORB handshake and exchange a request."""
        tracker_key, peer_key = NodeKey.generate(), NodeKey.generate()
        server_handler, client_handler = Handler(), Handler()
        port = yield self.listen(NodeTLS(tracker_key), server_handler, tracker_key)
        yield self.dial(port, NodeTLS(peer_key), client_handler, peer_key)
        client = yield client_handler.ready
        server = yield server_handler.ready
        self.assertEqual(client.remote.node_id, tracker_key.node_id)
        self.assertEqual(server.remote.node_id, peer_key.node_id)
        self.assertEqual(server.session.certificate_key, peer_key.public_bytes)
        self.assertEqual(client.session.certificate_key, tracker_key.public_bytes)
        addr = yield client.request(m.GetAddr())
        self.assertEqual(addr.entries, ())
        client.close()
        yield server_handler.lost

    @defer.inlineCallbacks
    def test_identity_mismatch(self):
        """A client whose TLS key is not its HELLO key gets ERROR(identity) and is dropped."""
        tracker_key, tls_key, claimed_key = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
        server_handler, client_handler = Handler(), Handler()
        port = yield self.listen(NodeTLS(tracker_key), server_handler, tracker_key)
        # TLS presents tls_key's certificate; HELLO claims claimed_key.
        yield self.dial(port, NodeTLS(tls_key), client_handler, claimed_key)
        yield server_handler.lost
        yield client_handler.lost
        self.assertFalse(server_handler.ready.called)
        self.assertEqual([e.code for e in server_handler.misbehaviour], [ErrorCode.IDENTITY])

    @defer.inlineCallbacks
    def test_dialled_node_id_mismatch(self):
        """Dialling an address expecting another node id ends with ERROR(identity)."""
        tracker_key, peer_key = NodeKey.generate(), NodeKey.generate()
        server_handler, client_handler = Handler(), Handler()
        port = yield self.listen(NodeTLS(tracker_key), server_handler, tracker_key)
        wrong = NodeKey.generate().node_id
        yield self.dial(port, NodeTLS(peer_key), client_handler, peer_key, expected_node_id=wrong)
        yield client_handler.lost
        self.assertEqual([e.code for e in client_handler.misbehaviour], [ErrorCode.IDENTITY])

    @defer.inlineCallbacks
    def test_ca_issued_tracker_certificate(self):
        """A tracker with a DNS name presents a CA chain; the client checks the name it dialled."""
        ca_key, ca_cert = make_ca()
        tracker_key, peer_key = NodeKey.generate(), NodeKey.generate()
        tracker_cert = issue(ca_key, ca_cert, tracker_key.private_key, "tracker.orb.test")
        server_handler, client_handler = Handler(), Handler()
        port = yield self.listen(NodeTLS(tracker_key, certificate=tracker_cert), server_handler, tracker_key)
        options = ca_client_options("tracker.orb.test", ca_cert, peer_key)
        yield self.dial(port, options, client_handler, peer_key)
        client = yield client_handler.ready
        self.assertEqual(client.remote.node_id, tracker_key.node_id)
        server = yield server_handler.ready
        self.assertEqual(server.remote.node_id, peer_key.node_id)

    @defer.inlineCallbacks
    def test_ca_certificate_without_subject_alt_name_is_refused(self):
        """A CA-issued certificate that names the host only in its CN (no subjectAltName) fails TLS, quietly."""
        ca_key, ca_cert = make_ca()
        tracker_key, peer_key = NodeKey.generate(), NodeKey.generate()
        tracker_cert = issue(ca_key, ca_cert, tracker_key.private_key, "tracker.orb.test", san=False)
        server_handler, client_handler = Handler(), Handler()
        port = yield self.listen(NodeTLS(tracker_key, certificate=tracker_cert), server_handler, tracker_key)
        yield self.dial(port, ca_client_options("tracker.orb.test", ca_cert, peer_key), client_handler, peer_key)
        reason = yield client_handler.lost
        self.assertFalse(client_handler.ready.called)
        self.assertIn("not for tracker.orb.test", str(reason) + repr(reason))
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_ca_certificate_for_another_name_is_refused(self):
        """A CA certificate for another DNS name fails TLS before any ORB frame."""
        ca_key, ca_cert = make_ca()
        tracker_key, peer_key = NodeKey.generate(), NodeKey.generate()
        tracker_cert = issue(ca_key, ca_cert, tracker_key.private_key, "other.orb.test")
        server_handler, client_handler = Handler(), Handler()
        port = yield self.listen(NodeTLS(tracker_key, certificate=tracker_cert), server_handler, tracker_key)
        options = ca_client_options("tracker.orb.test", ca_cert, peer_key)
        yield self.dial(port, options, client_handler, peer_key)
        reason = yield client_handler.lost
        self.assertFalse(client_handler.ready.called)
        self.assertFalse(server_handler.ready.called)
        self.assertIn("tracker.orb.test", str(reason) + repr(reason))
