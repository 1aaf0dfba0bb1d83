"""
Sealed secrets at a host (orb.peer.secrets, orb.net.packages, RFC 5.31,
9.12): what a host takes, what it refuses (and then stores nothing), that
it keeps only sealed bytes in a file only it can read, and that dropping
the package drops them.
"""

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from orb.identity import NodeKey
from orb.peer.secrets import HostSecrets, node_x25519_secret
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import secrets as sec
from orb.protocol.codes import ErrorCode
from tests._packages import function, open_store

VALUES = {"API_KEY": "host-secret-value-42"}


class TrackerRecord:
    """A tracker's session as the host sees it: what the host answered on it."""

    def __init__(self, is_tracker=True):
        self.is_tracker = is_tracker
        self.name = "tracker"
        self.sent = []

    def send(self, message, response_to=0):
        self.sent.append(message)


def secret_message(owner, host_key, fid, values=VALUES, seq=10, sealed_fid=None, named_host=None, to=None,
                   signer=None, sealed=None):
    """A SECRET as an owner makes it; the keyword arguments make the bad ones."""
    to = to or host_key
    if sealed is None:
        sealed = sec.seal(to.public_bytes, sealed_fid or fid, named_host or host_key.node_id, 1_764_000_000, values)
    signer = signer or owner
    return m.Secret(owner_key=owner.public_bytes, fid=fid, host=host_key.node_id, seq=seq, sealed=sealed,
                    signature=sec.sign(signer, fid, host_key.node_id, seq, sealed))


class HostSecretsTests(SynchronousTestCase):
    def setUp(self):
        self.store, self.data_dir = open_store(self)
        data, _ = function(seed=11)
        self.fid = fidmod.fid_for(data)
        self.successResultOf(self.store.put(data))
        self.owner = NodeKey.generate()
        self.successResultOf(self.store.set_owner(self.fid, self.owner.public_bytes))
        self.key = NodeKey.generate()
        self.other = NodeKey.generate()
        self.host = HostSecrets(self.key.node_id, node_x25519_secret(self.key), self.store)

    def send(self, message, record=None):
        record = record or TrackerRecord()
        self.host.on_secret(record, message, 5)
        [ack] = record.sent
        return ack

    def assert_refused(self, message, code, record=None):
        ack = self.send(message, record)
        self.assertEqual(ack.status, code, ack.text)
        self.assertIsNone(self.store.sealed_secret(self.fid))
        self.assertEqual(self.host.values_for(self.fid), {})
        return ack

    def test_host_keeps_the_sealed_bytes_and_opens_them_for_a_call(self):
        """A good SECRET is taken (0); a call then gets the names and values."""
        msg = secret_message(self.owner, self.key, self.fid)
        ack = self.send(msg)
        self.assertEqual((ack.status, ack.seq), (0, 10))
        self.assertEqual(self.store.sealed_secret(self.fid).sealed, msg.sealed)
        self.assertEqual(self.host.values_for(self.fid), VALUES)

    def test_kept_across_a_restart_only_sealed(self):
        """The index keeps the sealed secret over a restart; the value is nowhere in the file in the clear."""
        self.send(secret_message(self.owner, self.key, self.fid))
        reopened, _ = open_store(self, self.data_dir)
        self.assertEqual(HostSecrets(self.key.node_id, node_x25519_secret(self.key), reopened).values_for(self.fid),
                         VALUES)
        for name in os.listdir(self.data_dir):
            path = os.path.join(self.data_dir, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    self.assertNotIn(VALUES["API_KEY"].encode(), f.read(), name)

    def test_index_is_readable_by_its_owner_only(self):
        """packages.sqlite, where sealed secrets live, is mode 0600."""
        mode = stat.S_IMODE(os.stat(os.path.join(self.data_dir, "packages.sqlite")).st_mode)
        self.assertEqual(mode, 0o600)

    def test_sealed_for_another_function_is_refused(self):
        """A secret whose plaintext names another fid is refused invalid; nothing is kept."""
        other_fid = fidmod.fid_for(function(payload_bytes=16, seed=12)[0])
        ack = self.assert_refused(secret_message(self.owner, self.key, self.fid, sealed_fid=other_fid),
                                  ErrorCode.INVALID)
        self.assertIn("another function", ack.text)

    def test_sealed_to_another_host_is_refused(self):
        """A secret sealed to another host's key, or naming another host, is refused invalid."""
        self.assert_refused(secret_message(self.owner, self.key, self.fid, to=self.other,
                                           named_host=self.other.node_id), ErrorCode.INVALID)
        self.assert_refused(secret_message(self.owner, self.key, self.fid, named_host=self.other.node_id),
                            ErrorCode.INVALID)

    def test_addressed_to_another_host_is_refused(self):
        """A SECRET whose host field is another node id is refused invalid."""
        msg = secret_message(self.owner, self.other, self.fid)
        self.assert_refused(msg, ErrorCode.INVALID)

    def test_bad_signature_is_refused(self):
        """A SECRET not signed by its owner_key, or by a key that is not the function's owner, is denied."""
        self.assert_refused(secret_message(self.owner, self.key, self.fid, signer=self.other), ErrorCode.DENIED)
        self.assert_refused(secret_message(self.other, self.key, self.fid), ErrorCode.DENIED)

    def test_only_a_tracker_may_forward(self):
        """A SECRET from a session without the TRACKER role is denied."""
        self.assert_refused(secret_message(self.owner, self.key, self.fid), ErrorCode.DENIED,
                            TrackerRecord(is_tracker=False))

    def test_unknown_function_is_not_found(self):
        """A SECRET for a function this host does not hold is not_found."""
        fid = fidmod.fid_for(function(payload_bytes=16, seed=13)[0])
        ack = self.send(secret_message(self.owner, self.key, fid))
        self.assertEqual(ack.status, ErrorCode.NOT_FOUND)

    def test_too_large_is_refused(self):
        """A sealed map over 4096 bytes is refused too_large."""
        body = ('{"BIG":"' + "x" * 5000 + '"}').encode()
        plain = sec.DOMAIN + bytes([len(self.fid)]) + self.fid + self.key.node_id + (1).to_bytes(8, "big") + body
        sealed = sec.seal_deterministic(sec.x25519_public(self.key.public_bytes), plain[:4238 - 48], b"\x05" * 32)
        self.assert_refused(secret_message(self.owner, self.key, self.fid, sealed=sealed), ErrorCode.TOO_LARGE)

    def test_lower_seq_is_stale_and_keeps_the_newer(self):
        """A replayed or older SECRET is stale; the same one again is 0; the newer stays."""
        newer = secret_message(self.owner, self.key, self.fid, values={"A": "new"}, seq=20)
        self.send(newer)
        ack = self.send(secret_message(self.owner, self.key, self.fid, values={"A": "old"}, seq=19))
        self.assertEqual((ack.status, ack.seq), (ErrorCode.STALE, 20))
        self.assertEqual(self.send(newer).status, 0)
        self.assertEqual(self.host.values_for(self.fid), {"A": "new"})

    def test_dropping_the_package_drops_its_secrets(self):
        """Removing the package removes its sealed secrets, also from the index."""
        self.send(secret_message(self.owner, self.key, self.fid))
        self.successResultOf(self.store.remove(self.fid))
        self.assertIsNone(self.store.sealed_secret(self.fid))
        rows = self.successResultOf(self.store.db.run(lambda c: c.execute("SELECT count(*) FROM secrets").fetchone()))
        self.assertEqual(rows[0], 0)

    def test_a_store_from_before_secrets_opens(self):
        """A store written before secrets were kept is migrated: it opens with its packages and owners."""
        import sqlite3

        self.successResultOf(self.store.db.close())
        with sqlite3.connect(os.path.join(self.data_dir, "packages.sqlite")) as conn:  # the previous schema
            conn.execute("DROP TABLE secrets")
            conn.execute("DROP TABLE deprecations")  # (added after secrets)
            conn.execute("PRAGMA user_version=3")  # packages and partials, owners, revocations
        store, _ = open_store(self, self.data_dir)
        self.assertIn(self.fid, store)
        self.assertEqual(store.owner(self.fid), self.owner.public_bytes)
        self.assertIsNone(store.sealed_secret(self.fid))
