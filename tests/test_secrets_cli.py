"""
``orb secret`` without a network (orb.cli._secrets): how KEY=VALUE pairs and
files are read, which hosts a seal goes to, and that values are never in
what it prints.
"""

import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase

from orb.cli import _secrets, _ui
from orb.cli._ui import CommandError
from orb.identity import NodeKey
from orb.peer.secrets import node_x25519_secret
from orb.protocol import fid as fidmod
from orb.protocol import secrets as sec

FID = fidmod.to_text(b"\x01" + hashlib.sha256(b"cli").digest())


def host_entry(key, **kw):
    return {"node_id": key.node_id.hex(), "key": key.public_bytes.hex(), "is_tracker": False, "hosting": True,
            "sealed": False, "seq": None, "waiting": False, **kw}


class PairsTests(SynchronousTestCase):
    def test_pairs_are_read(self):
        """KEY=VALUE pairs become a map; a value may hold '=' and spaces."""
        self.assertEqual(_secrets.parse_pairs(["A=1", "B_2=x=y z"]), {"A": "1", "B_2": "x=y z"})

    def test_bad_pairs_are_usage_errors_without_the_value(self):
        """A pair without '=' or with a bad name is a usage error whose message does not hold the value."""
        for bad in ("novalue", "1A=secret-value", "A-B=secret-value"):
            with self.assertRaises(CommandError) as e:
                _secrets.parse_pairs([bad])
            self.assertEqual(e.exception.exit_code, _ui.EXIT_USAGE)
            self.assertNotIn("secret-value", str(e.exception))

    def test_file_must_be_private(self):
        """--from-file refuses a file others can read, and reads KEY=VALUE lines with comments."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# a comment\nA=1\n\nB = not-a-name\n")
        os.chmod(path, 0o644)
        with self.assertRaises(CommandError) as e:
            _secrets.read_file(path)
        self.assertIn("chmod 600", str(e.exception))
        os.chmod(path, 0o600)
        with self.assertRaises(CommandError):
            _secrets.read_file(path)  # "B " is not a name
        with open(path, "w") as f:
            f.write("# a comment\nA=1\nB=two words\n")
        self.assertEqual(_secrets.read_file(path), {"A": "1", "B": "two words"})

    def test_too_many_is_refused_before_any_network(self):
        """More than 32 secrets are refused at once, as a usage error."""
        with self.assertRaises(CommandError) as e:
            _secrets.checked({f"K{i}": "v" for i in range(33)})
        self.assertEqual(e.exception.exit_code, _ui.EXIT_USAGE)


class TargetsTests(SynchronousTestCase):
    def setUp(self):
        self.a, self.b, self.t = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
        self.doc = {"hosts": [host_entry(self.a, sealed=True), host_entry(self.b, waiting=True),
                              {**host_entry(self.t), "is_tracker": True, "key": None}]}

    def plan(self, **kw):
        return _secrets.SecretPlan(fid=FID, api="http://x", **kw)

    def test_all_hosts_are_the_peers(self):
        """--all-hosts seals to every peer listed, never to a tracker."""
        got = _secrets.targets(self.plan(all_hosts=True), self.doc)
        self.assertEqual({n for n, _ in got}, {self.a.node_id, self.b.node_id})

    def test_sync_seals_to_waiting_hosts_only(self):
        """sync seals only to the hosts that wait for a sealed copy."""
        got = _secrets.targets(self.plan(waiting_only=True), self.doc)
        self.assertEqual(got, [(self.b.node_id, self.b.public_bytes)])

    def test_unknown_host_is_not_found(self):
        """A --host the tracker does not list is refused with exit status 10."""
        with self.assertRaises(CommandError) as e:
            _secrets.targets(self.plan(hosts=(b"\x01" * 32,)), self.doc)
        self.assertEqual(e.exception.exit_code, _ui.EXIT_NOT_FOUND)

    def test_a_key_that_is_not_the_hosts_is_skipped(self):
        """A listed key whose SHA-256 is not the host's node id is never sealed to."""
        self.doc["hosts"][0]["key"] = self.b.public_bytes.hex()
        got = _secrets.targets(self.plan(all_hosts=True), self.doc)
        self.assertEqual([n for n, _ in got], [self.b.node_id])

    def test_sealed_message_opens_at_its_host_only(self):
        """What the CLI sends opens at the host with the values, and is signed by the owner."""
        owner = NodeKey.generate()
        plan = self.plan(key=owner, values={"A": "v"})
        msg = _secrets.sealed_message(plan, self.a.node_id, self.a.public_bytes, 7, 1_800_000_000)
        self.assertTrue(sec.verify(owner.public_bytes, msg.signature, msg.fid, msg.host, 7, msg.sealed))
        self.assertEqual(sec.open_for(node_x25519_secret(self.a), msg.sealed, msg.fid, self.a.node_id), {"A": "v"})
        with self.assertRaises(sec.SecretError):
            sec.open_for(node_x25519_secret(self.b), msg.sealed, msg.fid, self.b.node_id)


class OwnerCopyTests(SynchronousTestCase):
    def test_owner_copy_opens_with_the_owner_key_only(self):
        """sync reopens the owner copy with the owner key; another key is refused (exit 7)."""
        owner, thief = NodeKey.generate(), NodeKey.generate()
        raw = fidmod.from_text(FID)
        own_id = sec.owner_copy_host(owner.public_bytes)
        doc = {"owner_copy": {"seq": "1", "sealed": sec.seal(owner.public_bytes, raw, own_id, 1, {"A": "v"}).hex()}}
        plan = _secrets.SecretPlan(fid=FID, api="http://x", key=owner)
        self.assertEqual(_secrets.open_owner_copy(plan, doc), {"A": "v"})
        with self.assertRaises(CommandError) as e:
            _secrets.open_owner_copy(_secrets.SecretPlan(fid=FID, api="http://x", key=thief), doc)
        self.assertEqual(e.exception.exit_code, _ui.EXIT_REFUSED)
        with self.assertRaises(CommandError) as e:
            _secrets.open_owner_copy(plan, {"owner_copy": None})
        self.assertEqual(e.exception.exit_code, _ui.EXIT_NOT_FOUND)


class OwnerKeyOptionTests(SynchronousTestCase):
    def test_peer_owner_key_option(self):
        """twistd orb-peer --owner-key loads an owner key; a missing or world-readable one is a usage error."""
        from orb.cli._keys import create_owner_key
        from orb.peer import tap as peer_tap

        path = os.path.abspath(self.mktemp())
        key = create_owner_key(path)
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--owner-key", path])
        self.assertEqual(options["owner-key"].public_bytes, key.public_bytes)
        options = peer_tap.Options()
        options.parseOptions(["--data-dir", self.mktemp()])
        self.assertIsNone(options["owner-key"])
        os.chmod(path, 0o644)
        e = self.assertRaises(SystemExit, peer_tap.Options().parseOptions,
                              ["--data-dir", self.mktemp(), "--owner-key", path])
        self.assertIn("--owner-key", str(e))
        self.assertNotIn("PRIVATE", str(e))
