"""
The peer's hosting: the policy's decisions, and OFFER -> DEPLOY_ACK ->
fetch -> verify -> ANNOUNCE between real cores (tests/_memnet.py), with
the test playing the tracker.
"""

from twisted.trial.unittest import SynchronousTestCase

from orb.net.adapter import RemoteError
from orb.net.serving import PackageServer
from orb.peer import hosting as ho
from orb.protocol import fid as fidmod
from orb.protocol import manifest as mf
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import MessageType
from tests._memnet import PORT, MemoryNet
from tests._packages import function, open_store


def manifest(**kwargs):
    return ho.parse_manifest(function(**kwargs)[1])


class PolicyTests(SynchronousTestCase):
    def decide(self, policy=ho.HostingPolicy(), size=4096, hosted=0, used_bytes=0, **kwargs):
        return ho.decide(policy, manifest(**kwargs), size, hosted=hosted, used_bytes=used_bytes)

    def test_defaults_accept_a_plain_function(self):
        """A python function of 256 MiB on an empty peer with the default policy is accepted."""
        self.assertIsNone(self.decide())

    def test_runtime_not_allowed(self):
        """A runtime the operator did not allow is declined by the runtime policy, naming what is allowed."""
        decline = self.decide(ho.HostingPolicy(runtimes=frozenset({"python"})), runtime="exec")
        self.assertEqual(decline.policy, ho.DECLINE_RUNTIME)
        self.assertEqual(decline.text, "runtime: runtime 'exec' is not allowed here (allowed: python)")

    def test_memory_over_the_limit(self):
        """A function asking more memory than the per-function limit is declined by the memory policy."""
        decline = self.decide(ho.HostingPolicy(max_memory_mb=128), memory_mb=256)
        self.assertEqual(decline.policy, ho.DECLINE_MEMORY)

    def test_bytecode_for_another_python(self):
        """A bytecode package for another Python is declined; one for this peer's tag is accepted."""
        policy = ho.HostingPolicy(cache_tag="cpython-312")
        self.assertEqual(self.decide(policy, bytecode="cpython-311").policy, ho.DECLINE_BYTECODE)
        self.assertIsNone(self.decide(policy, bytecode="cpython-312"))

    def test_full_of_functions_or_disk(self):
        """A peer at its function count, or without the disk for the package, declines."""
        policy = ho.HostingPolicy(max_functions=2, max_disk_bytes=10_000)
        self.assertEqual(self.decide(policy, hosted=2).policy, ho.DECLINE_FUNCTIONS)
        self.assertEqual(self.decide(policy, used_bytes=8000).policy, ho.DECLINE_DISK)
        self.assertIsNone(self.decide(policy, hosted=1, used_bytes=4000))

    def test_package_over_the_size_limit(self):
        """A package larger than the peer's package limit, or of no bytes, is declined by the size policy."""
        self.assertEqual(self.decide(ho.HostingPolicy(max_package_bytes=1000)).policy, ho.DECLINE_SIZE)
        self.assertEqual(self.decide(size=0).policy, ho.DECLINE_SIZE)

    def test_manifest_must_be_canonical_and_valid(self):
        """An offered manifest that is not the canonical JSON of a valid manifest is refused."""
        raw = function()[1]
        self.assertRaises(mf.ManifestError, ho.parse_manifest, raw.replace(b'"name":"adder"', b'"name": "adder"'))
        self.assertRaises(mf.ManifestError, ho.parse_manifest, raw.replace(b'"runtime":"python"', b'"runtime":"ruby"'))
        self.assertRaises(mf.ManifestError, ho.parse_manifest, b"\xff")


class OfferTests(SynchronousTestCase):
    """The test plays the tracker: it OFFERs through a tracker core's session and serves FETCH from its store."""

    def setUp(self):
        self.net = MemoryNet()
        self.tracker = self.net.tracker("10.1.0.1")
        self.tracker_store, _ = open_store(self)
        self.tracker.table.handlers.update(PackageServer(self.tracker_store).handlers())
        self.announced = []
        announce = self.tracker.table.handlers[MessageType.ANNOUNCE]

        def on_announce(record, message, request_id):
            self.announced.append({e.fid for e in message.functions})
            announce(record, message, request_id)

        self.tracker.table.handlers[MessageType.ANNOUNCE] = on_announce

    def start_peer(self, policy=None, store=None, data_dir=None):
        if store is None:
            store, data_dir = open_store(self, data_dir)
        self.store, self.data_dir = store, data_dir
        self.peer = self.net.peer("10.2.0.1", trackers=[("10.1.0.1", PORT)], packages=store, hosting=policy,
                                  outbound_peers=0, outbound_trackers=1)
        self.net.run(2)
        return self.peer

    def offer(self, data, manifest_bytes, size=None, sources=None):
        fid = fidmod.fid_for(data)
        record = self.tracker.table.get(self.peer.node_id)
        if sources is None:
            sources = (m.Source(self.tracker.node_id, "10.1.0.1", PORT),)
        d = record.request(m.Offer(fid=fid, package_size=len(data) if size is None else size,
                                   manifest=manifest_bytes, sources=sources))
        self.net.run(1)
        return fid, d

    def test_offer_is_fetched_verified_and_announced(self):
        """An accepted OFFER is acknowledged with replicas=1; the peer fetches, stores and ANNOUNCEs the fid."""
        self.start_peer()
        data, manifest_bytes = function(payload_bytes=3000, seed=1)
        self.successResultOf(self.tracker_store.put(data))
        fid, d = self.offer(data, manifest_bytes)
        ack = self.successResultOf(d)
        self.assertEqual((ack.fid, ack.status, ack.replicas), (fid, 0, 1))
        self.assertIn(fid, self.store)
        self.assertEqual(self.announced[-1], {fid})
        text = fidmod.to_text(fid)
        self.assertEqual(dict(self.tracker.registry.peer(self.peer.node_id).functions), {text: ho.HOSTED_VERSION})

    def test_offer_of_a_runtime_not_allowed_is_declined(self):
        """OFFER of a runtime the peer does not allow: DEPLOY_ACK declined, replicas 0, nothing fetched or stored."""
        self.start_peer(ho.HostingPolicy(runtimes=frozenset({"python"})))
        data, manifest_bytes = function(runtime="exec")
        self.successResultOf(self.tracker_store.put(data))
        fid, d = self.offer(data, manifest_bytes)
        ack = self.successResultOf(d)
        self.assertEqual((ack.status, ack.replicas), (ErrorCode.DECLINED, 0))
        self.assertTrue(ack.text.startswith("runtime: runtime 'exec' is not allowed here"), ack.text)
        self.assertNotIn(fid, self.store)
        self.assertIsNone(self.store.partial(fid))
        self.assertNotIn(fid, self.announced[-1])
        # The session goes on: an allowed function offered next is hosted.
        ok, ok_manifest = function(seed=2, payload_bytes=10)
        self.successResultOf(self.tracker_store.put(ok))
        self.assertEqual(self.successResultOf(self.offer(ok, ok_manifest)[1]).status, 0)
        self.assertIn(fidmod.fid_for(ok), self.store)

    def test_failed_fetch_is_not_announced(self):
        """An accepted OFFER whose package no source holds is not announced and leaves nothing stored."""
        self.start_peer()
        data, manifest_bytes = function(payload_bytes=100, seed=3)  # the tracker does not hold it
        fid, d = self.offer(data, manifest_bytes)
        self.assertEqual(self.successResultOf(d).status, 0)
        self.net.run(1)
        self.assertNotIn(fid, self.store)
        self.assertNotIn(fid, self.peer.homing.functions)
        self.assertIn(fid, self.peer.hosting.failed)
        self.assertTrue(all(fid not in fids for fids in self.announced))
        self.assertIsNone(self.store.partial(fid))  # nothing was fetched, so no disk stays reserved
        self.assertEqual(self.store.used_bytes, 0)

    def test_package_whose_manifest_differs_from_the_offer_is_dropped(self):
        """A package that verifies but holds another manifest than the one offered is not kept nor announced."""
        self.start_peer()
        data, _ = function(payload_bytes=100, seed=4)
        _, other_manifest = function(memory_mb=64)
        self.successResultOf(self.tracker_store.put(data))
        fid, d = self.offer(data, other_manifest)
        self.assertEqual(self.successResultOf(d).status, 0)
        self.assertNotIn(fid, self.store)
        self.assertNotIn(fid, self.peer.homing.functions)
        self.assertIn("manifest", self.peer.hosting.failed[fid])

    def test_offer_only_from_a_tracker(self):
        """An OFFER from a node without the tracker role is refused with ERROR(denied)."""
        self.start_peer()
        other_store, _ = open_store(self)
        other = self.net.peer("10.3.0.1", trackers=[("10.1.0.1", PORT)], packages=other_store)
        self.net.run(2)
        data, manifest_bytes = function()
        record = other.table.get(self.peer.node_id)
        if record is None:
            d = other.table.dial("10.2.0.1", PORT)
            self.net.flush()
            record = self.successResultOf(d)
        answer = record.request(m.Offer(fid=fidmod.fid_for(data), package_size=len(data), manifest=manifest_bytes,
                                        sources=()))
        self.net.flush()
        self.assertEqual(self.failureResultOf(answer, RemoteError).value.code, ErrorCode.DENIED)

    def test_restart_announces_what_the_store_holds(self):
        """A peer restarted over its store announces its verified packages at once, and not a corrupted one."""
        store, data_dir = open_store(self)
        good, _ = function(payload_bytes=100, seed=5)
        bad, _ = function(payload_bytes=100, seed=6)
        self.successResultOf(store.put(good))
        self.successResultOf(store.put(bad))
        with open(store.path(fidmod.fid_for(bad)), "r+b") as f:
            f.write(b"Z")
        self.successResultOf(store.db.close())
        reopened, _ = open_store(self, data_dir)
        self.start_peer(store=reopened, data_dir=data_dir)
        self.assertEqual(self.announced[0], {fidmod.fid_for(good)})

    def test_corrupt_copy_found_by_a_challenge_leaves_the_announce(self):
        """A CHALLENGE of a copy that rotted is answered not_found and the fid leaves the next ANNOUNCE."""
        self.start_peer()
        data, manifest_bytes = function(payload_bytes=100, seed=7)
        self.successResultOf(self.tracker_store.put(data))
        fid, d = self.offer(data, manifest_bytes)
        self.successResultOf(d)
        with open(self.store.path(fid), "r+b") as f:
            f.write(b"Z")
        record = self.tracker.table.get(self.peer.node_id)
        answer = record.request(m.Challenge(fid=fid, nonce=b"\x01" * 32))
        self.net.flush()
        self.assertEqual(self.failureResultOf(answer, RemoteError).value.code, ErrorCode.NOT_FOUND)
        self.assertEqual(self.announced[-1], set())

    def test_a_repeated_offer_fetches_once(self):
        """An OFFER repeated while the first is fetching, or after, is accepted without a second download."""
        self.start_peer()
        data, manifest_bytes = function(payload_bytes=100, seed=8)
        self.successResultOf(self.tracker_store.put(data))
        fetches = []
        serve = self.tracker.table.handlers[MessageType.FETCH]
        self.tracker.table.handlers[MessageType.FETCH] = lambda *a: (fetches.append(a), serve(*a))
        record = self.tracker.table.get(self.peer.node_id)
        offer = m.Offer(fid=fidmod.fid_for(data), package_size=len(data), manifest=manifest_bytes,
                        sources=(m.Source(self.tracker.node_id, "10.1.0.1", PORT),))
        first, second = record.request(offer), record.request(offer)
        self.net.run(1)
        third = record.request(offer)
        self.net.run(1)
        self.assertEqual([self.successResultOf(d).text for d in (first, second, third)],
                         ["accepted; fetching", "accepted; fetching", "already hosted"])
        self.assertEqual(len(fetches), 1)

    def test_a_hosting_peer_serves_packages(self):
        """A peer with a store serves OFFER, FETCH, CHALLENGE, INVOKE, CANCEL, LOGS, RELAY, REVOKE, SECRET and DEPRECATE beside gossip."""
        self.start_peer()
        self.assertEqual(set(self.peer.table.handlers), {MessageType.GETADDR, MessageType.ADDR, MessageType.OFFER,
                                                          MessageType.FETCH, MessageType.CHALLENGE, MessageType.INVOKE,
                                                          MessageType.CANCEL, MessageType.LOGS, MessageType.RELAY,
                                                          MessageType.REVOKE, MessageType.SECRET,
                                                          MessageType.DEPRECATE})
