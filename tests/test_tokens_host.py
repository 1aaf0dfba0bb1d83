"""
Capability tokens at a host (orb.peer.tokens, orb.peer.invoke; RFC 9.11): a private function runs only
with a valid token bound to the caller the tracker vouches for, and a tracker's revocation reaches the
host and stops the token there.
"""

import attrs
from twisted.trial.unittest import SynchronousTestCase

from orb.peer.tokens import HostTokens
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import token as t
from orb.protocol.codes import ErrorCode, ResultStatus, TlvType
from tests import _records as records
from tests._memnet import PORT, MemoryNet
from tests._packages import function, open_store
from tests.test_invoke_host import FakeExecutor

OWNER, ALICE, BOB = (records.key(n) for n in ("owner", "alice", "bob"))


def revoke(signer, token_id, not_after):
    message = m.Revoke(issuer_key=signer.public_bytes, token_id=token_id, not_after=not_after, signature=bytes(64))
    return attrs.evolve(message, signature=signer.sign(message.signed_bytes()))


class HostTokenTests(SynchronousTestCase):
    """A peer wired as in a daemon, on an in-memory network, homed at a real tracker core."""

    def setUp(self):
        self.net = MemoryNet()
        self.net.clock.advance(1_000_000)
        self.tracker = self.net.tracker("10.1.0.1")
        store, _ = open_store(self, clock=self.net.clock)
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], packages=store,
                                  outbound_peers=0, outbound_trackers=1)
        self.executor = FakeExecutor(self.net.clock)
        self.peer.invocations.executor_factory = lambda: self.executor
        self.net.run(2)
        self.record = self.tracker.table.get(self.peer.node_id)
        data, _ = function(visibility="private")
        self.fid = fidmod.fid_for(data)
        self.successResultOf(store.put(data))
        self.successResultOf(store.set_owner(self.fid, OWNER.public_bytes))
        self.now = int(self.net.clock.seconds())
        self.token = t.issue(OWNER, OWNER.public_bytes, t.SCOPE_FID, self.fid, ALICE.public_bytes, self.now + 3600,
                             delegable=True)

    def call(self, token=b"", caller=None):
        ext = (m.Tlv(int(TlvType.CALLER), caller.public_bytes),) if caller is not None else ()
        d = self.record.request(m.Invoke(fid=self.fid, deadline_ms=2000, token=token, input=b"x", ext=ext))
        self.net.run(1)
        for call in self.executor.live():
            self.executor.finish(call)
        self.net.run(1)
        return self.successResultOf(d)

    def assertDenied(self, reason, result):
        self.assertEqual(result.status, ResultStatus.DENIED, result)
        self.assertTrue(result.log.decode().startswith(reason + ":"), result.log)

    def test_a_private_function_needs_a_token(self):
        """A call without a token never reaches the jail: RESULT denied, token_required."""
        self.assertDenied(t.REQUIRED, self.call())
        self.assertEqual(self.executor.calls, [])

    def test_a_valid_token_for_the_vouched_caller_runs(self):
        """The tracker's caller TLV is the key the token must be bound to; then the function runs."""
        result = self.call(self.token.encode(), caller=ALICE)
        self.assertEqual((result.status, result.output), (ResultStatus.OK, b"out"))
        self.assertDenied(t.CALLER, self.call(self.token.encode(), caller=BOB))

    def test_a_delegated_token_runs_and_a_widened_one_does_not(self):
        """Alice's delegation to Bob works at the host; one outliving her token is refused."""
        child = t.delegate(self.token, ALICE, t.SCOPE_FID, self.fid, BOB.public_bytes, self.now + 60)
        self.assertEqual(self.call(child.encode(), caller=BOB).status, ResultStatus.OK)
        link = t.Link(ALICE.public_bytes, t.SCOPE_FID, self.fid, BOB.public_bytes, self.now + 7200, False, root=False)
        link = attrs.evolve(link, signature=ALICE.sign(link.signed_bytes(self.token.last.signature)))
        self.assertDenied(t.WIDENED, self.call(t.Token((*self.token.links, link)).encode(), caller=BOB))

    def test_a_revocation_reaches_the_host_and_stops_the_token(self):
        """The owner's REVOKE at the tracker is pushed to the host, kept in its store, and refuses the token."""
        self.assertEqual(self.call(self.token.encode(), caller=ALICE).status, ResultStatus.OK)
        status, _ = self.tracker.tokens.revoke(revoke(OWNER, self.token.id, self.now + 3600))
        self.assertEqual(status, 0)
        self.net.run(1)
        self.assertEqual(len(self.peer.invocations.tokens), 1)
        self.assertDenied(t.REVOKED, self.call(self.token.encode(), caller=ALICE))
        kept = self.successResultOf(self.peer.packages.revocations())
        self.assertEqual([(r[0], r[1]) for r in kept], [(self.token.id, OWNER.public_bytes)])
        again = HostTokens(self.net.clock, self.peer.packages)  # a restarted host still knows it
        self.successResultOf(again.load())
        self.assertTrue(again.revoked(self.token.id, OWNER.public_bytes))

    def test_a_host_that_homes_gets_the_live_revocations(self):
        """A revocation taken in before the host connected is sent to it when its session is ready."""
        self.tracker.tokens.revoke(revoke(OWNER, b"\x07" * 16, self.now + 3600))
        store, _ = open_store(self, clock=self.net.clock)
        late = self.net.peer("10.2.0.2", trackers=[("10.1.0.1", PORT)], packages=store, outbound_peers=0,
                             outbound_trackers=1)
        self.net.run(3)
        self.assertTrue(late.invocations.tokens.revoked(b"\x07" * 16, OWNER.public_bytes))

    def test_revocations_from_a_non_tracker_or_forged_are_refused(self):
        """A host takes REVOKE only from a tracker, and only with the issuer's signature."""
        tokens = self.peer.invocations.tokens
        bad = attrs.evolve(revoke(OWNER, b"\x01" * 16, self.now + 60), signature=bytes(64))
        self.assertEqual(tokens.take(bad)[0], ErrorCode.DENIED)

        class Client:
            is_tracker = False
            sent = []

            def refuse(self, request_id, code, text):
                self.sent.append(code)

        client = Client()
        tokens.on_revoke(client, revoke(OWNER, b"\x02" * 16, self.now + 60), 5)
        self.assertEqual(client.sent, [ErrorCode.DENIED])
        self.assertEqual(len(tokens), 0)

    def test_a_revocation_is_forgotten_past_its_expiry(self):
        """Past not_after a revocation no longer counts (the token has expired anyway)."""
        tokens = self.peer.invocations.tokens
        tokens.take(revoke(OWNER, b"\x03" * 16, self.now + 10))
        self.assertTrue(tokens.revoked(b"\x03" * 16, OWNER.public_bytes))
        self.net.clock.advance(11)
        self.assertFalse(tokens.revoked(b"\x03" * 16, OWNER.public_bytes))

    def test_a_direct_call_is_bound_to_the_session_key(self):
        """A caller on its own session is bound to its key: a caller TLV from it is ignored."""

        class Remote:
            public_key = BOB.public_bytes

        class Direct:
            is_tracker = False
            remote = Remote()

        caller = HostTokens.caller_for(Direct(), m.Invoke(fid=self.fid, deadline_ms=0, token=b"", input=b"",
                                                          ext=(m.Tlv(int(TlvType.CALLER), ALICE.public_bytes),)))
        self.assertEqual(caller, BOB.public_bytes)


class FederatedRevocationTests(SynchronousTestCase):
    def test_a_revocation_at_one_tracker_reaches_a_host_homed_at_another(self):
        """REVOKE taken in at t1 federates to t2 within a push, and t2 pushes it to its host."""
        net = MemoryNet()
        net.clock.advance(1_000_000)
        t1 = net.tracker("10.1.0.1")
        t2 = net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])
        net.run(3)
        store, _ = open_store(self, clock=net.clock)
        peer = net.peer("10.2.0.1", trackers=[("10.1.0.2", PORT)], packages=store, outbound_peers=0,
                        outbound_trackers=1)
        net.run(3)
        self.assertIsNotNone(t2.table.get(peer.node_id))
        self.assertIsNone(t1.table.get(peer.node_id))  # the host hears it only from its own tracker
        now = int(net.clock.seconds())
        self.assertEqual(t1.tokens.revoke(revoke(OWNER, b"\x09" * 16, now + 600))[0], 0)
        net.run(2)
        self.assertTrue(t2.tokens.revoked(b"\x09" * 16, OWNER.public_bytes))
        self.assertTrue(peer.invocations.tokens.revoked(b"\x09" * 16, OWNER.public_bytes))
