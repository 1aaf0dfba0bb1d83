"""
Capability tokens at a tracker (orb.tracker.tokens, router, gateway; RFC 9.11, 10.9): the check before
routing, REVOKE into a federated registry kind, and the gateway's 401/403 and key proof.
"""

import base64

import json
import time

import attrs
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb.protocol import fid as fidmod

from orb.protocol import token as t
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.federation import REVOCATION
from orb.protocol.token import TokenError
from orb.tracker import gateway as gw
from orb.tracker.http import build_site
from orb.tracker.registry import Registry
from orb.tracker.router import Answer, Router, result
from orb.tracker.stats import Stats
from orb.tracker.tokens import Tokens
from tests import _records as records
from tests.test_gateway import GatewaySiteMixin, ScriptedRouter, ok, one
from tests.test_registry import sync
from tests.test_tokens_host import revoke

OWNER, ALICE, BOB = (records.key(n) for n in ("owner", "alice", "bob"))
FID = fidmod.to_text(fidmod.fid_for(b"private"))
PUBLIC_FID = fidmod.to_text(fidmod.fid_for(b"public"))
T0 = 1_000_000


def make_registry(label, clock):
    registry = Registry(clock, records.key(label))
    registry.upsert_function(records.function_record(OWNER, FID, time=1, visibility="private"))
    registry.upsert_function(records.function_record(OWNER, PUBLIC_FID, time=1))
    return registry


class TrackerTokenTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(T0)
        self.registry = make_registry("tracker-a", self.clock)
        self.tokens = Tokens(self.clock, self.registry)
        self.token = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_FID, fidmod.from_text(FID), ALICE.public_bytes,
                             T0 + 3600, delegable=True)

    def reason(self, token, caller=ALICE.public_bytes, tokens=None):
        try:
            (tokens or self.tokens).check(FID, token, caller)
        except TokenError as e:
            return e.reason
        return None

    def test_a_valid_token_passes_and_bad_ones_say_why(self):
        """The tracker's check passes the holder and names the reason for everyone else."""
        self.assertIsNone(self.reason(self.token.encode()))
        self.assertEqual(self.reason(b""), t.REQUIRED)
        self.assertEqual(self.reason(self.token.encode(), caller=BOB.public_bytes), t.CALLER)
        self.clock.advance(3601)
        self.assertEqual(self.reason(self.token.encode()), t.EXPIRED)

    def test_revoke_is_taken_in_and_refuses_the_token(self):
        """A REVOKE signed by the owner becomes a revocation record; the token is then token_revoked."""
        self.assertEqual(self.tokens.revoke(revoke(OWNER, self.token.id, T0 + 3600)), (0, "revoked"))
        self.assertEqual(len(self.registry.records(REVOCATION.name)), 1)
        self.assertEqual(self.reason(self.token.encode()), t.REVOKED)

    def test_bad_revocations_store_nothing(self):
        """A forged REVOKE is denied, one already expired is invalid; neither is kept."""
        forged = attrs.evolve(revoke(OWNER, self.token.id, T0 + 3600), not_after=T0 + 7200)
        self.assertEqual(self.tokens.revoke(forged)[0], ErrorCode.DENIED)
        self.assertEqual(self.tokens.revoke(revoke(OWNER, self.token.id, T0 - 1))[0], ErrorCode.INVALID)
        self.assertEqual(self.registry.records(REVOCATION.name), [])
        self.assertIsNone(self.reason(self.token.encode()))

    def test_someone_elses_revocation_does_not_apply(self):
        """Bob revoking Alice's token by id changes nothing: a revocation applies only by its issuer or the owner."""
        self.tokens.revoke(revoke(BOB, self.token.id, T0 + 3600))
        self.assertIsNone(self.reason(self.token.encode()))

    def test_revocations_federate_to_another_tracker(self):
        """A revocation taken in at one tracker refuses the token at another after a sync."""
        other = make_registry("tracker-b", self.clock)
        self.tokens.revoke(revoke(OWNER, self.token.id, T0 + 3600))
        sync(self.registry, other)
        self.assertEqual(self.reason(self.token.encode(), tokens=Tokens(self.clock, other)), t.REVOKED)

    def test_revocations_are_forgotten_past_their_expiry(self):
        """Past not_after the revocation is purged from the registry."""
        self.tokens.revoke(revoke(OWNER, self.token.id, T0 + 10))
        self.clock.advance(11)
        self.registry.expire()
        self.assertEqual(self.registry.stored(REVOCATION.name, f"{self.token.id.hex()}.x"), None)
        self.assertEqual(len(self.registry.records(REVOCATION.name)), 0)

    def test_name_scopes_follow_the_name_history(self):
        """With a NAME core, a name-scoped token covers the fids the name has pointed at, and no other."""

        class View:
            history = ((2, FID, False),)

        class Names:
            def resolve(self, label, name):
                return View() if name == "adder" else None

        named = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_NAME, t.name_scope("adder", OWNER.public_bytes), None,
                        T0 + 60)
        other = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_NAME, t.name_scope("other", OWNER.public_bytes), None,
                        T0 + 60)
        tokens = Tokens(self.clock, self.registry, names=Names())
        self.assertIsNone(self.reason(named.encode(), tokens=tokens))
        self.assertEqual(self.reason(other.encode(), tokens=tokens), t.SCOPE)

    def test_the_router_checks_private_calls_before_routing(self):
        """A private call without a valid token is RESULT denied with the reason, never routed or cached."""
        router = Router(self.clock, None, self.registry, None)
        router.tokens = self.tokens
        answer = self.successResultOf(router.call(fidmod.from_text(FID), b"x", token=b""))
        self.assertEqual(answer.result.status, ResultStatus.DENIED)
        self.assertTrue(answer.result.log.startswith(b"token_required:"))
        answer = self.successResultOf(router.call(fidmod.from_text(FID), b"x", token=self.token.encode(),
                                                  caller=BOB.public_bytes))
        self.assertTrue(answer.result.log.startswith(b"token_caller:"))


class CheckingRouter(ScriptedRouter):
    """The router's contract with its token check (as Router does it), answering ok when the check passes."""

    def __init__(self, tokens):
        super().__init__()
        self.tokens = tokens

    def call(self, fid_raw, data, deadline_s=None, token=b"", trace_id=b"", caller=None):
        self.calls.append({"token": token, "caller": caller})
        function = self.tokens.registry.function(fidmod.to_text(fid_raw))
        try:
            if function.manifest_json()["visibility"] == "private":
                self.tokens.check(fidmod.to_text(fid_raw), token, caller)
        except TokenError as e:
            return defer.succeed(Answer(result(ResultStatus.DENIED, f"{e.reason}: {e.text}"), attempts=0))
        return defer.succeed(Answer(ok(b"secret output"), None))


def proof(key, body, method, target, date=None):
    date = int(time.time()) if date is None else date
    sig = key.sign(gw.proof_bytes(date, body, method, target))
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=")  # noqa: E731
    return {b"Orb-Key": [b64(key.public_bytes)], b"Orb-Date": [str(date).encode()], b"Orb-Signature": [b64(sig)]}


class GatewayTokenTests(GatewaySiteMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.registry.upsert_function(records.function_record(OWNER, FID, time=1, visibility="private"))
        self.tokens = Tokens(reactor, self.registry)
        self.router = CheckingRouter(self.tokens)
        self.site = build_site(self.registry, Stats(reactor), self.router, reactor, self.config)
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        now = int(time.time())
        self.bearer = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_FID, fidmod.from_text(FID), None, now + 3600)
        self.bound = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_FID, fidmod.from_text(FID), ALICE.public_bytes,
                             now + 3600, delegable=True)

    @defer.inlineCallbacks
    def test_no_token_is_401_and_a_valid_one_200(self):
        """Without Authorization the gateway answers 401 token_required; with a bearer token, 200."""
        code, body, headers = yield self.request(b"POST", f"/f/{FID}", b"in")
        self.assertEqual((code, json.loads(body)["code"]), (401, "token_required"))
        self.assertIn("Bearer", one(headers, b"www-authenticate"))
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in",
                                           {b"Authorization": [b"Bearer " + self.bearer.text().encode()]})
        self.assertEqual((code, body), (200, b"secret output"))

    @defer.inlineCallbacks
    def test_a_key_bound_token_needs_the_holders_proof(self):
        """A key-bound token passes with Alice's Orb-Signature, and is 403 token_caller without it or with Bob's."""
        auth = {b"Authorization": [b"Bearer " + self.bound.text().encode()]}
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in", auth)
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_caller"))
        target = f"/f/{FID}".encode()
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in", {**auth, **proof(ALICE, b"in", b"POST", target)})
        self.assertEqual(code, 200)
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in", {**auth, **proof(BOB, b"in", b"POST", target)})
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_caller"))
        stale = proof(ALICE, b"in", b"POST", target, date=int(time.time()) - 120)
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in", {**auth, **stale})
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_caller"))

    @defer.inlineCallbacks
    def test_bad_tokens_are_403_with_the_reason(self):
        """Garbage, a revoked token and a widened delegation answer 403 with their own codes."""
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in", {b"Authorization": [b"Bearer !!!"]})
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_malformed"))
        self.tokens.revoke(revoke(OWNER, self.bearer.id, int(time.time()) + 3600))
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in",
                                           {b"Authorization": [b"Bearer " + self.bearer.text().encode()]})
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_revoked"))
        link = t.Link(ALICE.public_bytes, t.SCOPE_FID, fidmod.from_text(FID), None, self.bound.last.not_after + 60,
                      False, root=False)
        link = attrs.evolve(link, signature=ALICE.sign(link.signed_bytes(self.bound.last.signature)))
        widened = t.Token((*self.bound.links, link))
        code, body, _ = yield self.request(b"POST", f"/f/{FID}", b"in",
                                           {b"Authorization": [b"Bearer " + widened.text().encode()]})
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_widened"))

    @defer.inlineCallbacks
    def test_a_private_function_hides_from_all_but_its_owner(self):
        """GET shows only the fid, the API does not list it, and the owner's proof shows everything."""
        code, body, _ = yield self.request(b"GET", f"/f/{FID}")
        self.assertEqual(json.loads(body), gw.private_view(self.registry.function(FID)))
        code, body, _ = yield self.request(b"GET", "/api/v1/functions")
        self.assertNotIn(FID, [f["fid"] for f in json.loads(body)["functions"]])
        code, body, _ = yield self.request(b"GET", f"/api/v1/functions/{FID}")
        self.assertNotIn("manifest", json.loads(body))
        target = f"/f/{FID}".encode()
        code, body, _ = yield self.request(b"GET", f"/f/{FID}", None, proof(OWNER, b"", b"GET", target))
        self.assertIn("manifest", json.loads(body))
        target = f"/api/v1/functions/{FID}".encode()
        code, body, _ = yield self.request(b"GET", f"/api/v1/functions/{FID}", None, proof(OWNER, b"", b"GET", target))
        self.assertIn("manifest", json.loads(body))

    @defer.inlineCallbacks
    def test_public_functions_ignore_tokens(self):
        """A public function's call with garbage in Authorization still runs."""
        from tests.test_gateway import FID as PUBLIC

        code, _, _ = yield self.request(b"POST", f"/f/{PUBLIC}", b"in", {b"Authorization": [b"Bearer !!!"]})
        self.assertEqual(code, 200)





class PrivateDnsTests(SynchronousTestCase):
    def test_dns_txt_of_a_private_fid_says_only_that(self):
        """<fid>.orb TXT of a private function carries no name, version or owner."""
        from orb.dns.authority import OrbAuthority

        clock = Clock()
        clock.advance(T0)
        registry = make_registry("tracker-dns", clock)
        authority = OrbAuthority(registry, lambda fid, limit: [], ttl_s=10, gateways=lambda: [],
                                 gateway_url=lambda fid: f"http://10.1.0.1:7480/f/{fid}")
        txt = authority.txt(registry.function(FID))
        self.assertEqual(txt, [b"v=orb1", b"visibility=private", f"gateway=http://10.1.0.1:7480/f/{FID}".encode()])
        self.assertIn(b"owner=" + OWNER.public_bytes.hex().encode(), authority.txt(registry.function(PUBLIC_FID)))


class RevocationPersistenceTests(SynchronousTestCase):
    def test_a_restarted_tracker_keeps_its_revocations(self):
        """Revocations are saved with the registry and refuse the token after a restart."""
        from orb._db import Database
        from orb.tracker import registry as regmod

        clock = Clock()
        clock.advance(T0)
        key = records.key("tracker-a")
        registry = make_registry("tracker-a", clock)
        token = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_FID, fidmod.from_text(FID), None, T0 + 60)
        Tokens(clock, registry).revoke(revoke(OWNER, token.id, T0 + 60))
        path = self.mktemp() + ".sqlite"
        db = self.successResultOf(Database.open(None, path, regmod.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        self.successResultOf(registry.save(db))
        loaded = self.successResultOf(Registry.load(db, clock, key))
        with self.assertRaises(TokenError) as cm:
            Tokens(clock, loaded).check(FID, token.encode(), None)
        self.assertEqual(cm.exception.reason, t.REVOKED)
