"""
Sealed secrets at trackers (orb.tracker.secrets, RFC 5.31, 9.12), on the
in-memory network with real tracker and peer cores: the owner's SECRET is
checked against the function's owner, recorded (sealed, never opened),
federated, forwarded to its host when the host lists the fid (at once, or
when it comes back), and reaches the call; refusals store nothing.
"""

import attrs
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from orb.exec import ExecResult
from orb.identity import NodeKey
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import secrets as sec
from orb.protocol.codes import ErrorCode, ResultStatus
from orb.protocol.deploy import sign_deploy
from orb.protocol.federation import FunctionRecord, canonical_json
from orb.tracker.secrets import secret_status
from tests._memnet import PORT, MemoryNet
from tests._packages import function, open_store
from tests.test_secrets_host import TrackerRecord, secret_message

VALUES = {"API_KEY": "tracker-never-sees-this-7"}


@attrs.frozen
class _Config:
    input_max_bytes: int = 1024


class RecordingExecutor:
    """The jail as Invocations sees it: records each call's secrets and answers at once."""

    def __init__(self):
        self.calls = []
        self.config = _Config()
        self.running = self.queued = 0
        self.capacity = 4

    def start(self):
        return defer.succeed({})

    def stop(self):
        return defer.succeed(None)

    def invoke(self, fid, package_dir, spec, input_bytes, deadline_s=None, request_id="", secrets=None):
        self.calls.append({"fid": fid, "secrets": secrets})
        return defer.succeed(ExecResult(status=ResultStatus.OK, output=b"ran", log=b""))


class OwnerRecord(TrackerRecord):
    """The owner's session at a tracker (no TRACKER role)."""

    def __init__(self):
        super().__init__(is_tracker=False)
        self.name = "owner"


class _Net(SynchronousTestCase):
    """A tracker that knows the owner's function; peers that host it join it."""

    def setUp(self):
        self.net = MemoryNet()
        self.owner = NodeKey.generate()
        self.data, self.manifest = function(payload_bytes=32, seed=21)
        self.fid = fidmod.fid_for(self.data)
        self.fid_text = fidmod.to_text(self.fid)
        self.tracker = self.net.tracker("10.1.0.1")
        self.deploy(self.tracker)

    def deploy(self, tracker):
        issued = int(self.net.clock.seconds())
        tracker.registry.upsert_function(FunctionRecord(
            self.fid_text, self.owner.public_bytes, self.manifest, len(self.data), issued,
            sign_deploy(self.owner, self.fid, self.manifest, len(self.data), issued)))

    def host(self, address, tracker_address="10.1.0.1"):
        """A peer that holds the package (with its owner key) before it starts, so it announces it at once."""
        store, _ = open_store(self)
        self.successResultOf(store.put(self.data))
        self.successResultOf(store.set_owner(self.fid, self.owner.public_bytes))
        peer = self.net.peer(address, trackers=[(tracker_address, PORT)], packages=store, outbound_peers=0,
                             outbound_trackers=1)
        peer.executor = RecordingExecutor()
        peer.invocations.executor_factory = lambda: peer.executor
        return peer

    def key_of(self, peer):
        return peer.local.key

    def send(self, tracker, message):
        record = OwnerRecord()
        tracker.secrets.on_secret(record, message, 3)
        [ack] = record.sent
        return ack

    def call(self, tracker, peer):
        d = tracker.table.get(peer.node_id).request(m.Invoke(fid=self.fid, deadline_ms=2000, token=b"", input=b"x"))
        self.net.run(1)
        self.assertEqual(self.successResultOf(d).status, ResultStatus.OK)
        return peer.executor.calls[-1]["secrets"]


class SecretsNetTests(_Net):
    def test_owner_secret_reaches_the_host_and_its_call(self):
        """SECRET to a tracker is recorded, forwarded to the host, and a call there gets the values."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        ack = self.send(self.tracker, secret_message(self.owner, self.key_of(peer), self.fid, values=VALUES))
        self.assertEqual(ack.status, 0, ack.text)
        self.net.run(1)
        self.assertIsNotNone(peer.packages.sealed_secret(self.fid))
        self.assertEqual(self.call(self.tracker, peer), VALUES)

    def test_tracker_holds_only_sealed_bytes(self):
        """The tracker's registry record carries no name or value in the clear."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        self.send(self.tracker, secret_message(self.owner, self.key_of(peer), self.fid, values=VALUES))
        record = self.tracker.registry.stored("secret", f"{self.fid_text}.{peer.node_id.hex()}")
        self.assertIsNotNone(record)
        text = canonical_json(record.to_dict())
        self.assertNotIn(VALUES["API_KEY"].encode(), text)
        self.assertNotIn(b"API_KEY", text)

    def test_refusals_store_nothing(self):
        """Not the owner, a bad signature, an unknown fid, a node that is no host: refused, nothing recorded."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        thief = NodeKey.generate()
        key = self.key_of(peer)
        unknown = fidmod.fid_for(function(payload_bytes=32, seed=22)[0])
        cases = [
            (secret_message(thief, key, self.fid), ErrorCode.DENIED),
            (secret_message(self.owner, key, self.fid, signer=thief), ErrorCode.DENIED),
            (secret_message(self.owner, key, unknown), ErrorCode.NOT_FOUND),
            (secret_message(self.owner, NodeKey.generate(), self.fid), ErrorCode.NOT_FOUND),  # not a host of it
        ]
        for message, code in cases:
            self.assertEqual(self.send(self.tracker, message).status, code)
        self.assertEqual(self.tracker.registry.records("secret"), [])
        self.net.run(1)
        self.assertIsNone(peer.packages.sealed_secret(self.fid))

    def test_replay_is_stale(self):
        """An older seq is refused stale and the newer secret stays in force at the host."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        key = self.key_of(peer)
        self.assertEqual(self.send(self.tracker, secret_message(self.owner, key, self.fid, {"A": "2"}, seq=2)).status, 0)
        ack = self.send(self.tracker, secret_message(self.owner, key, self.fid, {"A": "1"}, seq=1))
        self.assertEqual((ack.status, ack.seq), (ErrorCode.STALE, 2))
        self.net.run(1)
        self.assertEqual(self.call(self.tracker, peer), {"A": "2"})

    def test_host_offline_gets_it_when_it_comes_back(self):
        """A host without a session when the owner seals gets the secret once it reconnects and announces."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        self.net.cut("10.2.0.1")
        self.send(self.tracker, secret_message(self.owner, self.key_of(peer), self.fid, values=VALUES))
        self.assertIsNone(peer.packages.sealed_secret(self.fid))
        self.net.run(30)
        self.assertIsNotNone(self.tracker.table.get(peer.node_id))
        self.assertEqual(peer.secrets.values_for(self.fid), VALUES)

    def test_new_host_waits_until_the_owner_seals_to_it(self):
        """A second host of a function with secrets is listed as waiting until the owner seals to it."""
        first = self.host("10.2.0.1")
        self.net.run(3)
        self.send(self.tracker, secret_message(self.owner, self.key_of(first), self.fid, values=VALUES))
        second = self.host("10.3.0.1")
        self.net.run(3)
        status = secret_status(self.tracker.registry, self.fid_text)
        self.assertEqual(status["waiting"], [second.node_id.hex()])
        entry = {h["node_id"]: h for h in status["hosts"]}[second.node_id.hex()]
        self.assertEqual(entry["key"], second.local.key.public_bytes.hex())  # what `orb secret sync` seals to
        self.assertEqual(self.call(self.tracker, second), None)  # no secrets there yet: an empty context
        self.send(self.tracker, secret_message(self.owner, self.key_of(second), self.fid, values=VALUES))
        self.net.run(1)
        self.assertEqual(secret_status(self.tracker.registry, self.fid_text)["waiting"], [])
        self.assertEqual(self.call(self.tracker, second), VALUES)

    def test_secret_federates_to_the_hosts_own_tracker(self):
        """A secret given to one tracker reaches a host homed on another, through federation."""
        other = self.net.tracker("10.1.0.2", join=[("10.1.0.1", PORT)])
        peer = self.host("10.2.0.1", tracker_address="10.1.0.2")
        self.net.run(5)
        self.assertIsNotNone(other.registry.function(self.fid_text))
        self.assertIsNone(self.tracker.table.get(peer.node_id))
        self.assertEqual(self.send(self.tracker, secret_message(self.owner, self.key_of(peer), self.fid,
                                                                values=VALUES)).status, 0)
        self.net.run(5)
        self.assertIsNotNone(other.registry.stored("secret", f"{self.fid_text}.{peer.node_id.hex()}"))
        self.assertEqual(peer.secrets.values_for(self.fid), VALUES)

    def test_a_record_signed_by_another_key_is_never_forwarded(self):
        """A federated record whose signer is not the function's owner is not pushed to the host."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        thief = NodeKey.generate()
        sealed = sec.seal(peer.local.key.public_bytes, self.fid, peer.node_id, 1, {"A": "forged"})
        from orb.protocol.federation import SecretRecord

        record = SecretRecord(self.fid_text, peer.node_id, thief.public_bytes, 5, sealed,
                              sec.sign(thief, self.fid, peer.node_id, 5, sealed))
        self.tracker.registry.accept(record)  # as if a federated tracker had taken it in
        self.net.run(1)
        self.assertIsNone(peer.packages.sealed_secret(self.fid))

    def test_owner_copy_is_kept_but_never_a_host(self):
        """The owner's own copy is stored and shown sealed, is no host, and makes unsealed hosts wait."""
        peer = self.host("10.2.0.1")
        self.net.run(3)
        own_id = sec.owner_copy_host(self.owner.public_bytes)
        sealed = sec.seal(self.owner.public_bytes, self.fid, own_id, 1, VALUES)
        message = m.Secret(owner_key=self.owner.public_bytes, fid=self.fid, host=own_id, seq=4, sealed=sealed,
                           signature=sec.sign(self.owner, self.fid, own_id, 4, sealed))
        self.assertEqual(self.send(self.tracker, message).status, 0)
        self.net.run(1)
        status = secret_status(self.tracker.registry, self.fid_text)
        self.assertEqual(status["owner_copy"], {"seq": "4", "sealed": sealed.hex()})
        self.assertNotIn(own_id.hex(), [h["node_id"] for h in status["hosts"]])
        self.assertEqual(status["waiting"], [peer.node_id.hex()])
        self.assertIsNone(peer.packages.sealed_secret(self.fid))


class SealingNodeTests(_Net):
    """SEAL: a peer run with the owner key reseals the owner copy to hosts that wait (RFC 5.32)."""

    def owner_copy(self, values=VALUES, seq=4):
        own_id = sec.owner_copy_host(self.owner.public_bytes)
        sealed = sec.seal(self.owner.public_bytes, self.fid, own_id, 1, values)
        return m.Secret(owner_key=self.owner.public_bytes, fid=self.fid, host=own_id, seq=seq, sealed=sealed,
                        signature=sec.sign(self.owner, self.fid, own_id, seq, sealed))

    def test_a_waiting_host_is_sealed_to_by_the_owners_node(self):
        """A new host waits; the owner's sealing node, asked by SEAL, seals to it; its calls get the secret."""
        first = self.host("10.2.0.1")
        self.net.run(3)
        self.send(self.tracker, secret_message(self.owner, self.key_of(first), self.fid, values=VALUES))
        self.assertEqual(self.send(self.tracker, self.owner_copy()).status, 0)
        second = self.host("10.3.0.1")
        self.net.run(3)
        self.assertEqual(secret_status(self.tracker.registry, self.fid_text)["waiting"], [second.node_id.hex()])
        self.net.peer("10.9.0.1", trackers=[("10.1.0.1", PORT)], outbound_peers=0, outbound_trackers=1,
                      owner_key=self.owner)
        self.net.run(5)
        self.assertEqual(secret_status(self.tracker.registry, self.fid_text)["waiting"], [])
        self.assertEqual(second.secrets.values_for(self.fid), VALUES)

    def test_a_peer_without_the_owner_key_is_never_asked(self):
        """A peer whose SEALER proof is signed by another key is not taken for the owner's sealing node."""
        first = self.host("10.2.0.1")
        self.net.run(3)
        self.send(self.tracker, secret_message(self.owner, self.key_of(first), self.fid, values=VALUES))
        self.send(self.tracker, self.owner_copy())
        second = self.host("10.3.0.1")
        self.net.peer("10.9.0.1", trackers=[("10.1.0.1", PORT)], outbound_peers=0, outbound_trackers=1,
                      owner_key=NodeKey.generate())
        self.net.run(5)
        self.assertEqual(secret_status(self.tracker.registry, self.fid_text)["waiting"], [second.node_id.hex()])
        self.assertEqual(second.secrets.values_for(self.fid), {})

    def test_sealer_refuses_what_it_must_not_seal(self):
        """SEAL from a session it did not dial, for a key that is not the host's, or with another fid's copy."""
        from orb.peer.secrets import Sealer

        sealer = Sealer(self.net.clock, self.owner)
        host = NodeKey.generate()
        good = m.Seal(fid=self.fid, host=host.node_id, host_key=host.public_bytes,
                      owner_copy=self.owner_copy().sealed)
        other_fid = fidmod.fid_for(function(payload_bytes=32, seed=23)[0])
        cases = [
            (good, TrackerRecord(is_tracker=False), ErrorCode.DENIED),
            (attrs.evolve(good, host_key=NodeKey.generate().public_bytes), TrackerRecord(), ErrorCode.INVALID),
            (attrs.evolve(good, fid=other_fid), TrackerRecord(), ErrorCode.INVALID),
        ]
        for message, record, code in cases:
            record.inbound = False
            sealer.on_seal(record, message, 9)
            [ack] = record.sent
            self.assertEqual(ack.status, code, ack.text)
        inbound = TrackerRecord()
        inbound.inbound = True
        sealer.on_seal(inbound, good, 9)
        self.assertEqual(inbound.sent[0].status, ErrorCode.DENIED)
