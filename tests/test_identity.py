"""Node keys on disk: created 0600 on first start, reused afterwards."""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from orb.identity import IdentityError, NodeKey, verify_signature
from orb.protocol.session import node_id_for


class NodeKeyTests(SynchronousTestCase):
    def test_created_private_and_reused(self):
        """The node key is created 0600 in a 0700 directory and the same id comes back on restart."""
        data_dir = self.mktemp()
        first = NodeKey.load_or_create(data_dir)
        key_path = os.path.join(data_dir, "private", "node.key")
        self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(key_path)).st_mode), 0o700)
        second = NodeKey.load_or_create(data_dir)
        self.assertEqual(first.node_id, second.node_id)
        self.assertEqual(first.node_id, node_id_for(first.public_bytes))

    def test_loose_permissions_are_tightened(self):
        """A node key left readable by others is made 0600 again at start."""
        data_dir = self.mktemp()
        NodeKey.load_or_create(data_dir)
        key_path = os.path.join(data_dir, "private", "node.key")
        os.chmod(key_path, 0o644)
        NodeKey.load_or_create(data_dir)
        self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)

    def test_corrupt_key_is_a_clear_error(self):
        """A corrupt key file stops the node with an error naming the file."""
        data_dir = self.mktemp()
        os.makedirs(os.path.join(data_dir, "private"))
        with open(os.path.join(data_dir, "private", "node.key"), "wb") as f:
            f.write(b"garbage")
        err = self.assertRaises(IdentityError, NodeKey.load_or_create, data_dir)
        self.assertIn("node.key", str(err))

    def test_repr_does_not_leak_the_secret(self):
        """Logging a key shows its node id, never the private key."""
        key = NodeKey.generate()
        self.assertNotIn("private", repr(key).lower())
        self.assertIn(key.node_id.hex()[:16], repr(key))

    def test_certificate_carries_the_node_key(self):
        """The self-signed TLS certificate carries the node's Ed25519 key."""
        from cryptography.hazmat.primitives import serialization

        key = NodeKey.generate()
        cert = key.self_signed_certificate()
        raw = cert.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.assertEqual(raw, key.public_bytes)

    def test_signatures(self):
        """Signatures verify with the right key and message only."""
        key = NodeKey.generate()
        sig = key.sign(b"hello")
        self.assertTrue(verify_signature(key.public_bytes, sig, b"hello"))
        self.assertFalse(verify_signature(key.public_bytes, sig, b"hellO"))
        self.assertFalse(verify_signature(b"short", sig, b"hello"))
