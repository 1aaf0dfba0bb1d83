"""
The owner's signed deploy statement (RFC 9.8): the RFC's vector, every
field covered by the signature, and the domain-separation prefix.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.protocol import deploy as d
from orb.protocol import fid, spec
from orb.protocol import manifest as mf
from orb.protocol.package import PackageFile, pack


def vector():
    with open(spec.VECTORS_PATH) as f:
        return json.load(f)["deploy_statement"]


def fields(v):
    return (bytes.fromhex(v["fid_bytes"]), v["manifest"].encode("utf-8"), int(v["package_size"]),
            int(v["issued_at"]))


class VectorTests(SynchronousTestCase):
    def test_signed_bytes_match_the_vector(self):
        """The signed bytes rebuilt from the vector's values equal its signed_bytes, prefix first."""
        v = vector()
        raw, manifest, size, issued = fields(v)
        statement = d.DeployStatement(raw, bytes.fromhex(v["owner_key"]), manifest, size, issued)
        self.assertEqual(statement.signed_bytes().hex(), v["signed_bytes"])
        self.assertTrue(statement.signed_bytes().startswith(b"ORB-DEPLOY-v1\x00"))
        self.assertEqual(len(statement.signed_bytes()), 14 + 1 + 33 + 32 + 32 + 8 + 8)

    def test_vector_signature_verifies(self):
        """The vector's signature verifies with its owner key over its values."""
        v = vector()
        self.assertTrue(d.verify_deploy(bytes.fromhex(v["owner_key"]), bytes.fromhex(v["signature"]), *fields(v)))

    def test_vector_signature_is_reproducible(self):
        """Signing the vector's values with the key from its seed label gives its signature byte for byte."""
        v = vector()
        key = spec._VectorKey(spec._det_bytes("orb-vector-owner", 32))
        self.assertEqual(key.public_bytes.hex(), v["owner_key"])
        self.assertEqual(d.sign_deploy(key, *fields(v)).hex(), v["signature"])

    def test_vector_package_is_what_the_toml_gives(self):
        """The vector's orb.toml and main.py pack to its manifest, fid and package size."""
        v = vector()
        m = mf.from_toml(v["orb_toml"])
        self.assertEqual(mf.canonical_bytes(m).decode("utf-8"), v["manifest"])
        data = pack([PackageFile("main.py", v["main_py"].encode())], m.to_json())
        self.assertEqual(fid.to_text(fid.fid_for(data)), v["fid"])
        self.assertEqual(str(len(data)), v["package_size"])

    def test_rfc_shows_the_vector(self):
        """RFC 9.8 carries the vector block, with the signature and fid in full."""
        with open(spec.RFC_PATH) as f:
            text = f.read()
        self.assertIn(("deploy", None), spec.markers(text))
        v = vector()
        self.assertIn(v["fid"], text)
        self.assertIn(v["signature"][:64], text)


class SignatureTests(SynchronousTestCase):
    def setUp(self):
        self.key = NodeKey.generate()
        self.args = (b"\x01" + b"\x11" * 32, b'{"name":"x"}', 4096, 1_764_000_000)
        self.sig = d.sign_deploy(self.key, *self.args)

    def test_round_trip(self):
        """A statement signed by a key verifies with that key's public key."""
        self.assertTrue(d.verify_deploy(self.key.public_bytes, self.sig, *self.args))

    def test_every_field_is_covered(self):
        """Changing the fid, the manifest, the size or the time makes the signature fail."""
        raw, manifest, size, issued = self.args
        for changed in ((b"\x01" + b"\x12" * 32, manifest, size, issued), (raw, manifest + b" ", size, issued),
                        (raw, manifest, size + 1, issued), (raw, manifest, size, issued + 1)):
            self.assertFalse(d.verify_deploy(self.key.public_bytes, self.sig, *changed))

    def test_another_key_fails(self):
        """A signature by another key, or checked against another key, does not verify."""
        other = NodeKey.generate()
        self.assertFalse(d.verify_deploy(other.public_bytes, self.sig, *self.args))
        self.assertFalse(d.verify_deploy(self.key.public_bytes, d.sign_deploy(other, *self.args), *self.args))

    def test_raw_manifest_signature_is_not_a_deploy_signature(self):
        """A signature over the bare manifest (no prefix, today's DEPLOY) is not accepted as a deploy statement."""
        self.assertFalse(d.verify_deploy(self.key.public_bytes, self.key.sign(self.args[1]), *self.args))

    def test_garbage_never_raises(self):
        """Malformed keys, signatures, fids or numbers give False, not an exception."""
        raw, manifest, size, issued = self.args
        pub = self.key.public_bytes
        for bad in ((b"\x00" * 31, self.sig, raw, manifest, size, issued),
                    (pub, self.sig[:63], raw, manifest, size, issued),
                    (pub, self.sig, b"\x07" + raw[1:], manifest, size, issued),
                    (pub, self.sig, raw, "text", size, issued),
                    (pub, self.sig, raw, manifest, -1, issued),
                    (pub, self.sig, raw, manifest, size, 2**64),
                    (None, None, None, None, None, None)):
            self.assertFalse(d.verify_deploy(*bad))

    def test_signing_a_bad_statement_raises(self):
        """Signing with a malformed fid is refused with DeployStatementError (a caller's bug)."""
        self.assertRaises(d.DeployStatementError, d.sign_deploy, self.key, b"\x01", b"{}", 1, 1)

    def test_private_key_object_signs(self):
        """A cryptography Ed25519PrivateKey signs as well as a NodeKey."""
        sig = d.sign_deploy(self.key.private_key, *self.args)
        self.assertTrue(d.verify_deploy(self.key.public_bytes, sig, *self.args))
