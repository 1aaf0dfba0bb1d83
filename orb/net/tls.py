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
from twisted.internet import ssl
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


def ca_client_options(hostname, ca_certificate, node_key):
    """
    Client options that verify a tracker's CA-issued certificate against
    ``hostname`` with service-identity, presenting our self-signed node
    certificate as the client certificate.
    """
    trust = ssl.Certificate.loadPEM(ca_certificate.public_bytes(serialization.Encoding.PEM))
    client_cert = ssl.PrivateCertificate.fromCertificateAndKeyPair(
        ssl.Certificate(crypto.X509.from_cryptography(node_key.self_signed_certificate())),
        ssl.KeyPair(crypto.PKey.from_cryptography_key(node_key.private_key)),
    )
    return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client_cert)


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
