# -*- test-case-name: tests.test_secrets_host -*-
"""
Function secrets at a host (RFC 5.31, 9.12).

A tracker forwards SECRET: a function's secrets sealed to this host's node
key and signed by the function's owner. The host takes it only from a
tracker session, only for a package it holds, only signed by the owner key
it holds for that package (from OFFER, RFC 10.7), only when the sealed box
opens with its own key and names this fid and this host, and only with a
seq above the one it holds. It then keeps the *sealed* bytes in the
package store's index (mode 0600) and forgets the plaintext.

For each call, ``values_for(fid)`` opens them again; Invocations hands the
map to the executor, which gives it to the function as ``context.secrets``
and to nothing else (no environment, no log, no file). A secret that no
longer opens gives an empty map and a log line that names no value.

``Sealer``: a peer run with the owner key (``--owner-key``) is that owner's
sealing node: it proves so in each ANNOUNCE (the SEALER TLV) and answers a
tracker's SEAL by resealing the owner copy to the waiting host.
"""

from cryptography.hazmat.primitives import serialization

from orb.net.logs import orb_logger
from orb.net.packages import SealedSecret
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import secrets as secretsmod
from orb.protocol.codes import ErrorCode, TlvType
from orb.protocol.messages import MessageType

log = orb_logger()

# The error code a host answers for each reason a secret is refused (orb.protocol.secrets.REASONS).
_CODES = {"too_large": ErrorCode.TOO_LARGE, "invalid": ErrorCode.INVALID, "denied": ErrorCode.DENIED}


def node_x25519_secret(key):
    """The X25519 secret key of a node, from the seed of its Ed25519 node key (an orb.identity.NodeKey)."""
    seed = key.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
    return secretsmod.x25519_private(seed)


class HostSecrets:
    """SECRET at a host, and the secrets of a call."""

    def __init__(self, node_id, x25519_secret, store):
        self.node_id = node_id
        self._x25519_secret = x25519_secret
        self.store = store

    def handlers(self):
        return {MessageType.SECRET: self.on_secret}

    def on_secret(self, record, message, request_id):
        held = self.store.sealed_secret(message.fid)
        held_seq = held.seq if held is not None else 0

        def ack(status, text, seq=held_seq):
            record.send(m.StatementAck(status=int(status), seq=seq, text=text[:200]), response_to=request_id)

        if not record.is_tracker:
            ack(ErrorCode.DENIED, "only a tracker forwards sealed secrets")
            return
        status, text = self.check(message)
        if status:
            log.info("refused the sealed secrets of {fid} from {peer}: {why}", fid=_fid(message.fid),
                     peer=record.name, why=text)
            ack(status, text)
            return
        secret = SealedSecret(message.owner_key, message.seq, message.sealed, message.signature)
        if held is not None and held.seq >= message.seq:
            if held == secret:
                ack(0, "held already")
            else:
                ack(ErrorCode.STALE, f"seq {message.seq} is not above the {held_seq} held")
            return
        d = self.store.set_sealed_secret(message.fid, secret)

        def kept(_):
            log.info("sealed secrets of {fid} kept (seq {seq})", fid=_fid(message.fid), seq=message.seq)
            ack(0, "kept", message.seq)

        def failed(failure):
            log.failure("keeping the sealed secrets of {fid}", failure, fid=_fid(message.fid))
            ack(ErrorCode.INTERNAL, "this host could not keep them")

        d.addCallbacks(kept, failed)

    def check(self, message):
        """(0, "") when this host takes ``message``; else (error code, why). Opens the box once, keeps nothing."""
        if self.store.get(message.fid) is None:
            return ErrorCode.NOT_FOUND, "this host does not hold the function"
        owner = self.store.owner(message.fid)
        if owner is None or owner != message.owner_key:
            return ErrorCode.DENIED, "not signed by the owner key this host holds for the function"
        if not secretsmod.verify(message.owner_key, message.signature, message.fid, message.host, message.seq,
                                 message.sealed):
            return ErrorCode.DENIED, "not the owner's signature of these sealed secrets (RFC 9.12)"
        if message.host != self.node_id:
            return ErrorCode.INVALID, "sealed to another host"
        try:
            secretsmod.open_for(self._x25519_secret, message.sealed, message.fid, self.node_id)
        except secretsmod.SecretError as e:
            return _CODES[secretsmod.REASONS[e.reason]], e.text
        return 0, ""

    def values_for(self, fid):
        """The secrets of a call of ``fid``: a dict of names to values (empty when it has none here)."""
        held = self.store.sealed_secret(fid)
        if held is None:
            return {}
        try:
            return secretsmod.open_for(self._x25519_secret, held.sealed, fid, self.node_id)
        except secretsmod.SecretError as e:
            log.warn("the sealed secrets of {fid} do not open here: {why}", fid=_fid(fid), why=e.text)
            return {}


def _fid(raw):
    try:
        return fidmod.to_text(raw)[:16]
    except fidmod.FidError:
        return raw.hex()[:16]


class Sealer:
    """An owner's sealing node (RFC 5.32, 9.12): a peer run with the owner key answers a tracker's SEAL by
    opening the owner copy and sealing the secrets to the waiting host, as SECRET on the same session."""

    def __init__(self, clock, owner):
        self.clock = clock
        self.owner = owner  # the owner's NodeKey
        self._x25519_secret = node_x25519_secret(owner)
        self._seq = 0

    def handlers(self):
        return {MessageType.SEAL: self.on_seal}

    def proof(self, node_id):
        """The SEALER TLV for this peer's ANNOUNCE."""
        return m.Tlv(int(TlvType.SEALER), secretsmod.sealer_proof(self.owner, node_id))

    def on_seal(self, record, message, request_id):
        def ack(status, text, seq=0):
            record.send(m.StatementAck(status=int(status), seq=seq, text=text[:200]), response_to=request_id)

        if not record.is_tracker or record.inbound:
            ack(ErrorCode.DENIED, "only a tracker this node dialled may ask it to seal")
            return
        try:
            secret = self.reseal(message)
        except secretsmod.SecretError as e:
            log.info("refused to seal {fid} to {host}: {why}", fid=_fid(message.fid), host=message.host.hex()[:16],
                     why=e.text)
            ack(ErrorCode.INVALID, e.text)
            return
        d = record.request(secret, timeout_s=30.0)

        def answered(statement_ack):
            log.info("sealed {fid} to {host}: status {status}", fid=_fid(message.fid), host=message.host.hex()[:16],
                     status=statement_ack.status)
            ack(statement_ack.status, statement_ack.text, statement_ack.seq)

        def failed(failure):
            ack(ErrorCode.INTERNAL, f"SECRET not answered: {failure.getErrorMessage()[:120]}")

        d.addCallbacks(answered, failed)

    def reseal(self, message):
        """The SECRET for ``message``'s host, from the owner copy it carries; SecretError when it must not be."""
        import hashlib

        if hashlib.sha256(message.host_key).digest() != message.host:
            raise secretsmod.SecretError("malformed", "host_key is not the key of that node id")
        own = secretsmod.owner_copy_host(self.owner.public_bytes)
        values = secretsmod.open_for(self._x25519_secret, message.owner_copy, message.fid, own)
        try:
            sealed = secretsmod.seal(message.host_key, message.fid, message.host, int(self.clock.seconds()), values)
        except ValueError as e:
            raise secretsmod.SecretError("malformed", str(e)) from None
        self._seq = max(self._seq + 1, int(self.clock.seconds() * 1_000_000))
        return m.Secret(owner_key=self.owner.public_bytes, fid=message.fid, host=message.host, seq=self._seq,
                        sealed=sealed, signature=secretsmod.sign(self.owner, message.fid, message.host, self._seq,
                                                                 sealed))
