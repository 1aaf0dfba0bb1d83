"""
The sealed-secret format (orb.protocol.secrets, RFC 9.12): the plaintext
bound to a fid and a host, the sealed box to the host's node key, the
owner's signature, the registry record, and every refusal.
"""

import hashlib
import json

from nacl.bindings import crypto_box_seal_open
from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.peer.secrets import node_x25519_secret
from orb.protocol import federation as fed
from orb.protocol import messages as m
from orb.protocol import secrets as sec
from orb.protocol import spec
from orb.protocol.frame import encode_frame, network_magic, FrameDecoder

FID = b"\x01" + hashlib.sha256(b"secret-fid").digest()
OTHER_FID = b"\x01" + hashlib.sha256(b"other-fid").digest()
VALUES = {"API_KEY": "k-123", "TOKEN": "t\u00e9st"}


class FormatTests(SynchronousTestCase):
    def setUp(self):
        self.host = NodeKey.generate()
        self.other = NodeKey.generate()
        self.owner = NodeKey.generate()
        self.x_secret = node_x25519_secret(self.host)

    def sealed(self, fid=FID, host=None, values=VALUES, to=None):
        to = to or self.host
        return sec.seal(to.public_bytes, fid, host or self.host.node_id, 1_764_000_000, values)

    def test_round_trip(self):
        """What the owner seals to a host opens there to the same names and values."""
        blob = self.sealed()
        self.assertEqual(sec.open_for(self.x_secret, blob, FID, self.host.node_id), VALUES)
        self.assertEqual(len(blob), len(sec.plaintext(FID, self.host.node_id, 1_764_000_000, VALUES)) + 48)

    def test_sealing_is_randomised(self):
        """Two seals of the same secrets differ: the ephemeral key is fresh each time."""
        self.assertNotEqual(self.sealed(), self.sealed())

    def test_another_function_is_refused(self):
        """A sealed secret moved to another fid is refused (wrong_fid)."""
        with self.assertRaises(sec.SecretError) as e:
            sec.open_for(self.x_secret, self.sealed(), OTHER_FID, self.host.node_id)
        self.assertEqual(e.exception.reason, "wrong_fid")

    def test_sealed_to_another_host_does_not_open(self):
        """A secret sealed to another host's key does not open here (undecryptable)."""
        with self.assertRaises(sec.SecretError) as e:
            sec.open_for(self.x_secret, self.sealed(to=self.other, host=self.other.node_id), FID, self.host.node_id)
        self.assertEqual(e.exception.reason, "undecryptable")

    def test_naming_another_host_is_refused(self):
        """A box that opens here but names another host is refused (wrong_host)."""
        with self.assertRaises(sec.SecretError) as e:
            sec.open_for(self.x_secret, self.sealed(host=self.other.node_id), FID, self.host.node_id)
        self.assertEqual(e.exception.reason, "wrong_host")

    def test_signature_binds_fid_host_seq_and_bytes(self):
        """The owner's signature fails for another fid, host, seq, sealed bytes or key."""
        blob = self.sealed()
        sig = sec.sign(self.owner, FID, self.host.node_id, 5, blob)
        self.assertTrue(sec.verify(self.owner.public_bytes, sig, FID, self.host.node_id, 5, blob))
        self.assertFalse(sec.verify(self.owner.public_bytes, sig, OTHER_FID, self.host.node_id, 5, blob))
        self.assertFalse(sec.verify(self.owner.public_bytes, sig, FID, self.other.node_id, 5, blob))
        self.assertFalse(sec.verify(self.owner.public_bytes, sig, FID, self.host.node_id, 6, blob))
        self.assertFalse(sec.verify(self.owner.public_bytes, sig, FID, self.host.node_id, 5, blob[:-1] + b"x"))
        self.assertFalse(sec.verify(self.other.public_bytes, sig, FID, self.host.node_id, 5, blob))

    def test_too_many_or_too_large_is_refused_by_the_sealer(self):
        """More than 32 secrets, or a map over 4096 bytes, cannot be sealed (too_large)."""
        for values in ({f"K{i}": "v" for i in range(33)}, {"BIG": "x" * 4096}):
            with self.assertRaises(sec.SecretError) as e:
                self.sealed(values=values)
            self.assertEqual(e.exception.reason, "too_large")

    def test_too_large_is_refused_by_the_host(self):
        """A crafted box whose map passes 4096 bytes is refused when opened (too_large)."""
        body = json.dumps({"BIG": "x" * 5000}, separators=(",", ":")).encode()
        plain = sec.DOMAIN + bytes([len(FID)]) + FID + self.host.node_id + (1).to_bytes(8, "big") + body
        blob = sec.seal_deterministic(sec.x25519_public(self.host.public_bytes), plain, b"\x07" * 32)
        with self.assertRaises(sec.SecretError) as e:
            sec.open_for(self.x_secret, blob, FID, self.host.node_id)
        self.assertEqual(e.exception.reason, "too_large")

    def test_bad_names_and_values_are_refused(self):
        """A name that is not an identifier, or a value that is not text, is malformed."""
        for values in ({"1ABC": "v"}, {"A-B": "v"}, {"": "v"}, {"A": 1}, {"A" * 65: "v"}):
            with self.assertRaises(sec.SecretError) as e:
                self.sealed(values=values)
            self.assertEqual(e.exception.reason, "malformed", values)

    def test_non_canonical_map_is_refused(self):
        """A map not in JCS form (spaces, order) is refused when opened."""
        body = b'{"B": "1", "A": "2"}'
        plain = sec.DOMAIN + bytes([len(FID)]) + FID + self.host.node_id + (1).to_bytes(8, "big") + body
        blob = sec.seal_deterministic(sec.x25519_public(self.host.public_bytes), plain, b"\x07" * 32)
        with self.assertRaises(sec.SecretError) as e:
            sec.open_for(self.x_secret, blob, FID, self.host.node_id)
        self.assertEqual(e.exception.reason, "malformed")

    def test_garbage_never_raises_anything_else(self):
        """Truncated or garbage plaintext raises only SecretError."""
        good = sec.plaintext(FID, self.host.node_id, 1, VALUES)
        for cut in range(0, len(good), 7):
            try:
                sec.parse_plaintext(good[:cut])
            except sec.SecretError:
                pass
        for junk in (b"", b"\x00" * 10, b"x" * 100, sec.DOMAIN + b"\xff"):
            with self.assertRaises(sec.SecretError):
                sec.parse_plaintext(junk)
        with self.assertRaises(sec.SecretError):
            sec.open_sealed(self.x_secret, b"short")


class VectorTests(SynchronousTestCase):
    def test_vector_opens_with_the_sample_hosts_key(self):
        """The RFC's sealed example opens with libsodium and the sample host's key, to the plaintext shown."""
        v = spec.secret_vector()
        plain = crypto_box_seal_open(bytes.fromhex(v["sealed"]), bytes.fromhex(v["host_x25519_public"]),
                                     bytes.fromhex(v["host_x25519_secret"]))
        self.assertEqual(plain.hex(), v["plaintext"])
        fid, host, issued_at, values = sec.parse_plaintext(plain)
        self.assertEqual((fid.hex(), host.hex(), issued_at, values),
                         (v["fid_bytes"], v["host_node_id"], int(v["issued_at"]), spec.SECRET_VALUES))

    def test_vector_keys_derive_from_the_ed25519_seed(self):
        """The vector's X25519 keys are the ones derived from the host's Ed25519 key and seed."""
        v = spec.secret_vector()
        self.assertEqual(sec.x25519_public(bytes.fromhex(v["host_ed25519_public"])).hex(), v["host_x25519_public"])
        self.assertEqual(sec.x25519_private(spec._det_bytes("orb-vector-host", 32)).hex(), v["host_x25519_secret"])

    def test_vector_signature_verifies(self):
        """The vector's owner signature verifies over the signed bytes shown."""
        v = spec.secret_vector()
        self.assertEqual(sec.signed_bytes(bytes.fromhex(v["fid_bytes"]), bytes.fromhex(v["host_node_id"]),
                                          int(v["seq"]), bytes.fromhex(v["sealed"])).hex(), v["signed_bytes"])
        self.assertTrue(sec.verify(bytes.fromhex(v["owner_key"]), bytes.fromhex(v["signature"]),
                                   bytes.fromhex(v["fid_bytes"]), bytes.fromhex(v["host_node_id"]), int(v["seq"]),
                                   bytes.fromhex(v["sealed"])))

    def test_secret_message_round_trips(self):
        """SECRET decodes to what was encoded; a sealed field over its limit is refused at encode."""
        msg = spec.sample_secret()
        magic = network_magic("devnet")
        (frame,) = FrameDecoder(magic).feed(encode_frame(magic, msg, 3))
        self.assertEqual(frame.message, msg)
        with self.assertRaises(ValueError):
            m.Secret(owner_key=msg.owner_key, fid=msg.fid, host=msg.host, seq=1, sealed=b"x" * 4239,
                     signature=msg.signature)


class RecordTests(SynchronousTestCase):
    def record(self):
        v = spec.secret_vector()
        from orb.protocol import fid as fidmod

        return fed.SecretRecord(fidmod.to_text(bytes.fromhex(v["fid_bytes"])), bytes.fromhex(v["host_node_id"]),
                                bytes.fromhex(v["owner_key"]), int(v["seq"]), bytes.fromhex(v["sealed"]),
                                bytes.fromhex(v["signature"]))

    def test_record_round_trips_and_verifies(self):
        """A secret record survives its JSON form and its key fits the kinds table."""
        record = self.record()
        again = fed.SecretRecord.from_dict(json.loads(fed.canonical_json(record.to_dict())))
        self.assertEqual(again, record)
        again.verify()
        spec_, ident = fed.KINDS.of_key(fed.KINDS.key_of(record))
        self.assertEqual((spec_.name, ident), ("secret", record.ident))

    def test_forged_record_is_refused(self):
        """A record whose sealed bytes or seq changed fails its owner signature."""
        import attrs

        for forged in (attrs.evolve(self.record(), seq=self.record().seq + 1),
                       attrs.evolve(self.record(), sealed=self.record().sealed[:-1] + b"\x00")):
            with self.assertRaises(fed.BadSignature):
                forged.verify()

    def test_record_holds_no_plaintext(self):
        """The registry record carries the sealed bytes only: no name or value in the clear."""
        text = fed.canonical_json(self.record().to_dict())
        for word in (b"API_KEY", b"vector-key-0123", b"eu-west"):
            self.assertNotIn(word, text)

    def test_malformed_records_are_refused(self):
        """Bad members (short sealed bytes, uppercase hex, bad fid) make the record malformed."""
        good = self.record().to_dict()
        for bad in ({**good, "sealed": "00"}, {**good, "sealed": good["sealed"].upper()},
                    {**good, "fid": "nope"}, {**good, "seq": "0"}, {k: v for k, v in good.items() if k != "sig"}):
            with self.assertRaises(fed.RegistryChangeError):
                fed.SecretRecord.from_dict(bad)
