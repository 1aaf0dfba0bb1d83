"""
``orb grant`` and ``orb revoke`` (orb.cli._tokens): tokens issued by the owner key, delegated by the
holder's node key, a widening refused locally, and the arguments a person types.
"""

import contextlib
import io
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from orb.cli import _keys, _tokens
from orb.cli._ui import CommandError
from orb.cli.main import main
from orb.identity import NodeKey
from orb.protocol import fid as fidmod
from orb.protocol import token as t

FID = fidmod.to_text(fidmod.fid_for(b"cli private"))


class GrantTests(SynchronousTestCase):
    def setUp(self):
        self.home = os.path.abspath(self.mktemp())
        os.makedirs(self.home)
        self.patch(os, "environ", {**os.environ, "ORB_HOME": self.home})
        self.owner = _keys.create_owner_key(os.path.join(self.home, "owner.key"))
        self.node = NodeKey.load_or_create(self.home)

    def orb(self, *argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(list(argv))
        return code, out.getvalue()

    def test_grant_prints_a_token_the_owner_signed(self):
        """`orb grant FID --to KEY --json` prints a token bound to KEY, scoped to FID, checkable by a host."""
        code, out = self.orb("grant", FID, "--to", self.node.public_bytes.hex(), "--expires", "2h", "--delegable",
                             "--json")
        self.assertEqual(code, 0)
        doc = json.loads(out)
        self.assertEqual((doc["scope"], doc["holder"]), (FID, self.node.public_bytes.hex()))
        token = t.decode(t.from_text(doc["token"]))
        self.assertEqual(token.id.hex(), doc["id"])
        t.check(token, fidmod.from_text(FID), self.owner.public_bytes, self.node.public_bytes, doc["not_after"] - 60)

    def test_to_takes_a_key_file_and_bearer_needs_no_key(self):
        """--to reads a PEM key file's public key; --bearer makes a bearer token."""
        code, out = self.orb("grant", FID, "--to", os.path.join(self.home, "private", "node.key"))
        self.assertEqual(t.decode(t.from_text(out.strip())).last.holder, self.node.public_bytes)
        code, out = self.orb("grant", FID, "--bearer")
        self.assertIsNone(t.decode(t.from_text(out.strip())).last.holder)

    def test_delegation_with_the_node_key_and_a_widening_refused(self):
        """--from delegates with this node's key; a later expiry than the parent's is refused with a clear message."""
        _, parent = self.orb("grant", FID, "--to", self.node.public_bytes.hex(), "--expires", "1h", "--delegable")
        code, child = self.orb("grant", "--from", parent.strip(), "--bearer", "--expires", "30m")
        self.assertEqual(code, 0)
        self.assertEqual(len(t.decode(t.from_text(child.strip())).links), 2)
        with self.assertRaises(CommandError) as cm:
            _tokens.grant(_Args(parent=parent.strip(), bearer=True, expires="2h"))
        self.assertIn("widen", str(cm.exception))
        code, _ = self.orb("grant", "--from", parent.strip(), "--bearer", "--expires", "2h")
        self.assertEqual(code, 7)

    def test_a_name_scope_uses_the_owners_label(self):
        """`orb grant adder` scopes the token to adder.<the owner's label>."""
        code, out = self.orb("grant", "adder", "--bearer", "--json")
        self.assertEqual(json.loads(out)["scope"], f"adder.{t.owner_label(self.owner.public_bytes)}")

    def test_expiry_forms(self):
        """--expires takes 1h, an ISO time or Unix seconds, and refuses anything else."""
        self.assertEqual(_tokens.parse_expires("1h", 1000), 4600)
        self.assertEqual(_tokens.parse_expires("2030-01-01T00:00:00Z", 0), 1893456000)
        self.assertEqual(_tokens.parse_expires("1893456000", 0), 1893456000)
        with self.assertRaises(CommandError):
            _tokens.parse_expires("soon", 0)


class _Args:
    def __init__(self, **kw):
        self.scope = None
        self.to = None
        self.bearer = False
        self.expires = None
        self.delegable = False
        self.parent = None
        self.key = None
        self.json = False
        self.__dict__.update(kw)
