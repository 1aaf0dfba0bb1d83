"""
Capability tokens, the format and the check (orb.protocol.token, RFC 9.11): the vectors, delegation,
and every reason a call is refused.
"""

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import fid as fidmod
from orb.protocol import spec
from orb.protocol import token as t
from orb.protocol.token import TokenError
from tests import _records as records

OWNER, ALICE, BOB, MALLORY = (records.key(n) for n in ("owner", "alice", "bob", "mallory"))
FID = fidmod.fid_for(b"private function")
OTHER = fidmod.fid_for(b"another function")
NOW = 1_000_000
LATER = NOW + 3600


def root(holder=ALICE, scope=FID, kind=t.SCOPE_FID, not_after=LATER, delegable=True, issuer=OWNER):
    return t.issue(issuer, issuer.public_bytes, kind, scope, holder.public_bytes if holder else None, not_after,
                   delegable)


class FormatTests(SynchronousTestCase):
    def assertRefused(self, reason, token, fid=FID, caller=ALICE.public_bytes, now=NOW, **kw):
        with self.assertRaises(TokenError) as cm:
            t.check(token, fid, OWNER.public_bytes, caller, now, **kw)
        self.assertEqual(cm.exception.reason, reason, cm.exception)
        return cm.exception

    def test_vectors_verify_and_have_the_sizes_the_rfc_states(self):
        """The RFC's root and delegated tokens check out, at 174 and 283 bytes (232 and 378 characters)."""
        root_token, child = spec.sample_tokens()
        tracker, owner = spec.sample_keys()
        fid = root_token.links[0].scope
        self.assertEqual((len(root_token.encode()), len(root_token.text())), (174, 232))
        self.assertEqual((len(child.encode()), len(child.text())), (283, 378))
        t.check(root_token.encode(), fid, owner.public_bytes, tracker.public_bytes, spec.TOKEN_TIME)
        t.check(t.from_text(child.text()), fid, owner.public_bytes, None, spec.TOKEN_TIME)
        self.assertEqual(t.decode(child.encode()), child)

    def test_a_valid_root_token_passes_for_its_holder(self):
        """A key-bound token for the fid lets its holder call; the token's id is its link's."""
        token = root()
        self.assertEqual(t.check(token.encode(), FID, OWNER.public_bytes, ALICE.public_bytes, NOW).id, token.id)
        self.assertEqual(len(token.id), 16)

    def test_no_token_is_token_required(self):
        """A private call without a token is told a token is required (HTTP 401)."""
        error = self.assertRefused(t.REQUIRED, b"")
        self.assertEqual(error.code, "missing")

    def test_garbage_is_malformed(self):
        """Bytes that are no token, a wrong version, trailing bytes or bad text are token_malformed."""
        good = root().encode()
        for bad in (b"\x01", b"\x02" + good[1:], good + b"\x00", good[:-1], b"\x01" + b"\xff" * 200):
            self.assertRefused(t.MALFORMED, bad)
        with self.assertRaises(TokenError):
            t.from_text("not base64 !")

    def test_a_forged_link_is_refused(self):
        """A link whose signature is not its issuer's, or a root not by the owner, is token_forged."""
        token = root()
        link = token.links[0]
        tampered = t.Token((attrs.evolve(link, not_after=LATER + 10**6),))
        self.assertRefused(t.FORGED, tampered.encode())
        self.assertRefused(t.FORGED, root(issuer=MALLORY).encode())
        child = t.delegate(token, ALICE, t.SCOPE_FID, FID, BOB.public_bytes, LATER)
        forged_child = t.Token((token.links[0], attrs.evolve(child.links[1], holder=MALLORY.public_bytes)))
        self.assertRefused(t.FORGED, forged_child.encode(), caller=MALLORY.public_bytes)

    def test_expired_is_refused(self):
        """A token past its not_after is token_expired."""
        self.assertRefused(t.EXPIRED, root(not_after=NOW - 1).encode())

    def test_another_fid_is_out_of_scope(self):
        """A token for another function is token_scope."""
        self.assertRefused(t.SCOPE, root().encode(), fid=OTHER)

    def test_another_caller_is_refused(self):
        """A key-bound token presented by another key is token_caller; a bearer token by anyone passes."""
        self.assertRefused(t.CALLER, root().encode(), caller=BOB.public_bytes)
        self.assertRefused(t.CALLER, root().encode(), caller=None)
        t.check(root(holder=None).encode(), FID, OWNER.public_bytes, None, NOW)

    def test_revoked_links_are_refused(self):
        """A revocation of any link by its issuer or by the owner refuses the chain; another key's does not."""
        token = root()
        child = t.delegate(token, ALICE, t.SCOPE_FID, FID, BOB.public_bytes, LATER)
        root_id, child_id = child.link_ids()
        for revoked in ({(root_id, OWNER.public_bytes)}, {(child_id, ALICE.public_bytes)},
                        {(child_id, OWNER.public_bytes)}):
            self.assertRefused(t.REVOKED, child.encode(), caller=BOB.public_bytes,
                               revoked=lambda i, k, r=revoked: (i, k) in r)
        t.check(child.encode(), FID, OWNER.public_bytes, BOB.public_bytes, NOW,
                revoked=lambda i, k: (i, k) == (child_id, MALLORY.public_bytes))

    def test_delegation_works_and_narrows(self):
        """A delegable holder issues a shorter token to another key, or a fid under a name scope."""
        child = t.delegate(root(), ALICE, t.SCOPE_FID, FID, BOB.public_bytes, LATER - 60)
        t.check(child.encode(), FID, OWNER.public_bytes, BOB.public_bytes, NOW)
        named = root(kind=t.SCOPE_NAME, scope=t.name_scope("adder", OWNER.public_bytes))
        narrowed = t.delegate(named, ALICE, t.SCOPE_FID, FID, None, LATER)
        t.check(narrowed.encode(), FID, OWNER.public_bytes, None, NOW, name_fids=lambda scope: [FID])
        self.assertRefused(t.SCOPE, narrowed.encode(), name_fids=lambda scope: [OTHER])

    def test_a_widened_delegation_is_refused(self):
        """Outliving the parent, another fid, a name under a fid, a non-delegable or bearer parent: token_widened."""
        parent = root()
        for scope_kind, scope, not_after in ((t.SCOPE_FID, FID, LATER + 1), (t.SCOPE_FID, OTHER, LATER),
                                             (t.SCOPE_NAME, t.name_scope("x", OWNER.public_bytes), LATER)):
            with self.assertRaises(TokenError) as cm:
                t.delegate(parent, ALICE, scope_kind, scope, BOB.public_bytes, not_after)
            self.assertEqual(cm.exception.reason, t.WIDENED)
            # a holder that builds the link by hand anyway is refused by every checker
            link = t.Link(ALICE.public_bytes, scope_kind, scope, BOB.public_bytes, not_after, False, root=False)
            link = attrs.evolve(link, signature=ALICE.sign(link.signed_bytes(parent.last.signature)))
            self.assertRefused(t.WIDENED, t.Token((*parent.links, link)).encode(), caller=BOB.public_bytes)
        with self.assertRaises(TokenError) as cm:
            t.delegate(root(delegable=False), ALICE, t.SCOPE_FID, FID, BOB.public_bytes, LATER)
        self.assertEqual(cm.exception.reason, t.WIDENED)
        bearer = root(holder=None)
        self.assertRefused(t.WIDENED, bearer.encode() + root().encode()[1 + 32:], caller=None)

    def test_chains_are_at_most_four_links(self):
        """A fifth link is refused."""
        token = root()
        keys = [ALICE, BOB, MALLORY, OWNER]
        for signer, holder in zip(keys, keys[1:]):
            token = t.delegate(token, signer, t.SCOPE_FID, FID, holder.public_bytes, LATER, delegable=True)
        self.assertEqual(len(token.links), 4)
        t.check(token.encode(), FID, OWNER.public_bytes, OWNER.public_bytes, NOW)
        with self.assertRaises(TokenError):
            t.delegate(token, OWNER, t.SCOPE_FID, FID, None, LATER)

    def test_a_host_without_names_accepts_the_owners_name_scope_only(self):
        """Without name resolution a name scope covers the owner's functions, not another owner's."""
        named = root(kind=t.SCOPE_NAME, scope=t.name_scope("adder", OWNER.public_bytes))
        t.check(named.encode(), FID, OWNER.public_bytes, ALICE.public_bytes, NOW)
        foreign = root(kind=t.SCOPE_NAME, scope=t.name_scope("adder", MALLORY.public_bytes))
        self.assertRefused(t.SCOPE, foreign.encode())

    def test_describe_names_the_scope_holder_and_expiry(self):
        """`orb grant --json` shows the id, scope, holder and expiry of a token."""
        doc = t.describe(t.delegate(root(), ALICE, t.SCOPE_FID, FID, None, LATER - 5))
        self.assertEqual((doc["scope"], doc["holder"], doc["not_after"]), (fidmod.to_text(FID), "bearer", LATER - 5))
        self.assertEqual(len(doc["links"]), 2)


class HostileInputTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=700))
    def test_arbitrary_bytes_raise_only_token_errors(self, data):
        """Any bytes at all are a token that passes or a TokenError: never another exception."""
        try:
            t.check(data, FID, OWNER.public_bytes, ALICE.public_bytes, NOW)
        except TokenError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 314), st.integers(1, 255))
    def test_a_flipped_byte_is_refused(self, offset, mask):
        """Any byte of a valid 2-link token changed makes it refused (no bit is unsigned)."""
        child = t.delegate(root(), ALICE, t.SCOPE_FID, FID, BOB.public_bytes, LATER).encode()
        bad = bytearray(child)
        bad[offset % len(bad)] ^= mask
        with self.assertRaises(TokenError):
            t.check(bytes(bad), FID, OWNER.public_bytes, BOB.public_bytes, NOW)

    @settings(max_examples=100, deadline=None)
    @given(st.text(max_size=600))
    def test_arbitrary_text_raises_only_token_errors(self, text):
        """Any Bearer text is a token's bytes or a TokenError."""
        try:
            t.decode(t.from_text(text))
        except TokenError:
            pass
