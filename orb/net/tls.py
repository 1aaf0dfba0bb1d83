# -*- test-case-name: tests.test_tls -*-
"""
TLS for ORB sessions: TLS 1.3, mutual, no CA by default.

Both ends present a self-signed certificate carrying their Ed25519 node
key. TLS itself accepts any certificate; the binding is checked by the
session once HELLO arrives: certificate key == HELLO key, node id ==
SHA-256(key). A tracker with a DNS name may instead present a CA-issued
chain, which the client verifies with service-identity against the name
it dialled (``ca_client_options``).
"""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer


def _accept_any(connection, x509, errno, depth, ok):
    # Identity is checked by the session against HELLO, not by a CA.
    return True


def _base_context(certificate, private_key, chain=()):
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
    # OpenSSL keeps a ~17 kB read and a ~17 kB write record buffer per connection for its
    # whole life unless told to free them while empty; most sessions are idle most of the time.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.use_certificate(crypto.X509.from_cryptography(certificate))
    for extra in chain:
        ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
    ctx.use_privatekey(crypto.PKey.from_cryptography_key(private_key))
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
    return ctx


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class NodeTLS:
    """Connection creator for both ends of a self-signed, key-bound session."""

    def __init__(self, node_key, certificate=None, private_key=None, chain=()):
        """
        By default the node's self-signed certificate is used. A tracker with
        a CA-issued certificate passes it (and its key and chain) instead; it
        must still request and accept its clients' self-signed certificates.
        """
        self.node_key = node_key
        certificate = certificate or node_key.self_signed_certificate()
        self._ctx = _base_context(certificate, private_key or node_key.private_key, chain)

    @property
    def context(self):
        """The pyOpenSSL context every connection of this node shares."""
        return self._ctx

    def serverConnectionForTLS(self, tls_protocol):
        return SSL.Connection(self._ctx, None)

    def clientConnectionForTLS(self, tls_protocol):
        return SSL.Connection(self._ctx, None)

    def wrap(self, factory, is_client):
        return TLSMemoryBIOFactory(self, is_client, factory)


class TLSMaterialError(ValueError):
    """A certificate file cannot be used."""


def load_certificates(path, what="certificate file"):
    """Every certificate of a PEM file, in order."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        raise TLSMaterialError(f"{what} {path}: {e}") from None
    if not certs:
        raise TLSMaterialError(f"{what} {path}: no certificate in it")
    return certs


def ca_node_tls(node_key, path):
    """NodeTLS presenting the CA-issued certificate chain in ``path``,
    whose first certificate must carry the node key (RFC 7.4)."""
    leaf, *chain = load_certificates(path, "--tls-cert")
    key = leaf.public_key()
    if not isinstance(key, Ed25519PublicKey) or key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw) != node_key.public_bytes:
        raise TLSMaterialError(f"--tls-cert {path}: its first certificate does not carry this node's key "
                               f"(node id {node_key.node_id.hex()[:16]}...)")
    return NodeTLS(node_key, certificate=leaf, chain=chain)


def ca_client_options(hostname, ca_certificate, node_key):
    """
    Client options that verify a tracker's CA-issued certificate against
    ``hostname`` with service-identity, presenting our self-signed node
    certificate as the client certificate.  ``ca_certificate`` is one
    trust anchor or a list of them.
    """
    anchors = ca_certificate if isinstance(ca_certificate, (list, tuple)) else [ca_certificate]
    return CAClientTLS(hostname, anchors, node_key)


class CAVerificationError(Exception):
    """A CA-mode certificate does not prove the name dialled."""


@implementer(IOpenSSLClientConnectionCreator)
class CAClientTLS:
    """The client side of CA mode (RFC 7.4): OpenSSL verifies the chain
    against the trust anchors, then the leaf must carry ``hostname`` in its
    subjectAltName (service-identity).  Any failure fails the handshake
    quietly; a certificate without subjectAltName fails too (Twisted's own
    ``optionsForClientTLS`` only logs that case)."""

    def __init__(self, hostname, anchors, node_key):
        from service_identity.hazmat import DNS_ID

        self.hostname = hostname
        self._id = DNS_ID(hostname)
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
        ctx.use_certificate(crypto.X509.from_cryptography(node_key.self_signed_certificate()))
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(node_key.private_key))
        store = ctx.get_cert_store()
        for anchor in anchors:
            store.add_cert(crypto.X509.from_cryptography(anchor))
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        self._ctx = ctx

    def _verify(self, connection, x509, errno, depth, ok):
        if not ok or depth != 0:
            return bool(ok)
        from service_identity import VerificationError
        from service_identity.exceptions import CertificateError
        from service_identity.hazmat import verify_service_identity
        from service_identity.pyopenssl import extract_patterns

        try:
            verify_service_identity(extract_patterns(x509), [self._id], [])
        except (VerificationError, CertificateError) as e:
            self._fail(connection, f"the certificate is not for {self.hostname}: {e}")
            return False
        except Exception:  # never raise inside an OpenSSL callback
            self._fail(connection, f"the certificate for {self.hostname} could not be checked")
            return False
        return True

    @staticmethod
    def _fail(connection, message):
        from twisted.python.failure import Failure

        tls_protocol = connection.get_app_data()
        if tls_protocol is not None and hasattr(tls_protocol, "failVerification"):
            tls_protocol.failVerification(Failure(CAVerificationError(message)))

    def clientConnectionForTLS(self, tls_protocol):
        connection = SSL.Connection(self._ctx, None)
        connection.set_tlsext_host_name(self.hostname.encode("idna"))
        connection.set_app_data(tls_protocol)
        connection.set_connect_state()
        return connection


def _split_pem(data):
    marker = b"-----END CERTIFICATE-----"
    return [part + marker + b"\n" for part in data.split(marker) if part.strip()]


def peer_ed25519_key(transport):
    """
    The raw Ed25519 public key of the remote's TLS certificate, or None if
    the certificate's key is of another type (a CA-issued tracker
    certificate) or there is no certificate.
    """
    x509 = transport.getPeerCertificate()
    if x509 is None:
        return None
    key = x509.to_cryptography().public_key()
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
