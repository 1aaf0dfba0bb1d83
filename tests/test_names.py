"""Names, updates and deprecation (RFC 5.24, 5.29, 9.3, 9.10)."""

import attrs
from twisted.trial import unittest

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import names as nm
from orb.protocol import spec
from orb.protocol.codes import ErrorCode
from orb.protocol.frame import FrameDecoder, encode_frame

FID = b"\x01" + b"\x11" * 32
FID2 = b"\x01" + b"\x22" * 32


class OwnerLabelTests(unittest.SynchronousTestCase):
    def test_label_is_32_chars_of_the_hashed_key(self):
        """An owner label is 32 lowercase base32 characters, the same for one key everywhere."""
        import base64
        import hashlib

        _, peer = spec.sample_keys()
        label = nm.owner_label(peer.public_bytes)
        digest = hashlib.sha256(b"ORB-OWNER-v1\x00" + peer.public_bytes).digest()[:20]
        self.assertEqual(label, base64.b32encode(digest).decode().lower())
        self.assertEqual(len(label), 32)
        self.assertTrue(nm.is_owner_label(label))
        self.assertEqual(label, "srikagibxwq3fzq3w23ycdcn2sxqccnm")  # the RFC 9.3 vector

    def test_label_refuses_a_short_key(self):
        """Only a 32-byte key has a label."""
        self.assertRaises(ValueError, nm.owner_label, b"\x01" * 31)


class CheckNameTests(unittest.SynchronousTestCase):
    def test_good_names(self):
        """Lowercase DNS labels are names."""
        for text in ("a", "adder", "my-func-2", "0", "a" * 63):
            self.assertEqual(nm.check_name(text), text)

    def test_bad_names(self):
        """Uppercase, dots, edge hyphens, empty and over-long labels are refused."""
        for text in ("", "Adder", "-a", "a-", "a.b", "a_b", "a" * 64, "é", None, b"adder"):
            self.assertRaises(ValueError, nm.check_name, text)


class WireTests(unittest.SynchronousTestCase):
    def setUp(self):
        _, self.owner = spec.sample_keys()

    def test_deprecate_round_trip(self):
        """A DEPRECATE survives encoding and decoding unchanged, TLVs included."""
        d = nm.make_deprecate(self.owner, FID, 5, successor=FID2, sunset=1_800_000_000)
        d = attrs.evolve(d, ext=(m.Tlv(0x0001, b"pad"),))
        data = encode_frame(b"ORB1", d, 7, 0, 1)
        frames = FrameDecoder(b"ORB1").feed(data)
        self.assertEqual(frames[0].message, d)
        self.assertTrue(nm.verify_signature(frames[0].message))  # TLVs are not signed

    def test_signed_bytes_layout(self):
        """The DEPRECATE signature covers the domain tag and the body without the signature."""
        d = nm.make_deprecate(self.owner, FID, 5, successor=FID2, sunset=9)
        signed = d.signed_bytes()
        self.assertTrue(signed.startswith(b"ORB-DEPRECATE-v1\x00" + self.owner.public_bytes + b"\x21" + FID))
        self.assertTrue(signed.endswith((5).to_bytes(8, "big") + b"\x01\x21" + FID2 + (9).to_bytes(8, "big")))

    def test_vector_signatures_verify(self):
        """The NAME and DEPRECATE of the RFC vectors are validly signed by the sample owner."""
        msgs = {name: msg for name, msg, _, _ in spec.sample_messages()}
        self.assertTrue(nm.verify_signature(msgs["name"]))
        self.assertTrue(nm.verify_signature(msgs["deprecate"]))
        nm.check_deprecate(msgs["deprecate"])
        nm.check_name_record(msgs["name"])

    def test_tampered_or_foreign_signature_is_denied(self):
        """A statement changed after signing, or signed by another key, is refused `denied`."""
        other, _ = spec.sample_keys()
        d = nm.make_deprecate(self.owner, FID, 5)
        for bad in (attrs.evolve(d, seq=6), attrs.evolve(d, owner_key=other.public_bytes)):
            e = self.assertRaises(nm.StatementError, nm.check_deprecate, bad)
            self.assertEqual(e.code, ErrorCode.DENIED)

    def test_invalid_content(self):
        """A successor that is no fid or the fid itself, or a sunset without deprecation, is `invalid`."""
        for kwargs in ({"successor": FID}, {"deprecated": False, "sunset": 5}):
            d = nm.make_deprecate(self.owner, FID, 5, **kwargs)
            self.assertEqual(self.assertRaises(nm.StatementError, nm.check_deprecate, d).code, ErrorCode.INVALID)
        raw = m.Deprecate(owner_key=self.owner.public_bytes, fid=FID, seq=3, deprecated=1, successor=b"\x09" * 5,
                          sunset=0, signature=b"\0" * 64)
        raw = attrs.evolve(raw, signature=self.owner.sign(raw.signed_bytes()))
        self.assertEqual(self.assertRaises(nm.StatementError, nm.check_deprecate, raw).code, ErrorCode.INVALID)
        zero = nm.make_deprecate(self.owner, FID, 0)
        self.assertEqual(self.assertRaises(nm.StatementError, nm.check_deprecate, zero).code, ErrorCode.INVALID)

    def test_name_with_a_bad_label_is_invalid(self):
        """A NAME whose name is not a DNS label is refused `invalid`, even when signed."""
        n = m.Name(owner_key=self.owner.public_bytes, name="Bad_Name", seq=1, fid=FID, deprecated=0, successor=b"",
                   sunset=0, signature=b"\0" * 64)
        n = attrs.evolve(n, signature=self.owner.sign(n.signed_bytes()))
        self.assertEqual(self.assertRaises(nm.StatementError, nm.check_name_record, n).code, ErrorCode.INVALID)

    def test_make_name_takes_fid_text(self):
        """A NAME can be built from a fid's text form."""
        n = nm.make_name(self.owner, "adder", 2, fidmod.to_text(FID))
        self.assertEqual(n.fid, FID)
        nm.check_name_record(n)


class RegistryKindTests(unittest.SynchronousTestCase):
    def setUp(self):
        from orb.protocol import federation as fed

        self.fed = fed
        _, self.owner = spec.sample_keys()

    def test_records_round_trip_as_changes(self):
        """NAME and DEPRECATE records survive a federation change and still verify."""
        fed = self.fed
        for record in (fed.NameRecord.from_message(nm.make_name(self.owner, "adder", 3, FID, True, FID2, 100)),
                       fed.DeprecationRecord.from_message(nm.make_deprecate(self.owner, FID, 2, sunset=100))):
            spec_ = fed.KINDS.of_record(record)
            change = fed.Change(self.owner.node_id, 1, spec_, record)
            back = fed.Change.from_bytes(change.to_bytes())
            self.assertEqual(back.record, record)
            back.record.verify()
            self.assertEqual(fed.KINDS.of_key(spec_.key(record.ident))[0], spec_)

    def test_name_key_carries_the_owner_label(self):
        """A name record is keyed name:<name>.<owner label>, within the 160-character key limit."""
        record = self.fed.NameRecord.from_message(nm.make_name(self.owner, "a" * 63, 1, FID))
        key = self.fed.KINDS.key_of(record)
        self.assertEqual(key, "name:" + "a" * 63 + "." + nm.owner_label(self.owner.public_bytes))
        self.assertLessEqual(len(key), self.fed.MAX_KEY_CHARS)

    def test_tampered_record_fails_verification(self):
        """A relayed record whose fields were changed does not verify."""
        record = self.fed.DeprecationRecord.from_message(nm.make_deprecate(self.owner, FID, 2, sunset=100))
        self.assertRaises(self.fed.BadSignature, attrs.evolve(record, sunset=200).verify)

    def test_entry_under_another_owner_label_is_refused(self):
        """A snapshot entry whose key names another owner than the record's key is malformed."""
        other, _ = spec.sample_keys()
        record = self.fed.NameRecord.from_message(nm.make_name(self.owner, "adder", 1, FID))
        bad_key = "name:adder." + nm.owner_label(other.public_bytes)
        self.assertRaises(self.fed.RegistryChangeError, self.fed.SnapshotEntry.from_list, [bad_key, record.to_dict()])

    def test_malformed_records(self):
        """Extra members, a successor equal to the fid or a sunset without deprecation are malformed."""
        fed = self.fed
        good = fed.DeprecationRecord.from_message(nm.make_deprecate(self.owner, FID, 2, sunset=100)).to_dict()
        for bad in ({**good, "name": "x"}, {**good, "successor": good["fid"]},
                    {**good, "deprecated": False}, {**good, "deprecated": 1}, {**good, "sunset": 2**53}):
            self.assertRaises(fed.RegistryChangeError, fed.DeprecationRecord.from_dict, bad)


NOW = 1_800_000_000


class FakeSession:
    """A session record as a handler sees it: what was sent on it."""

    def __init__(self, is_tracker=False):
        self.sent = []
        self.is_tracker = is_tracker
        self.inbound = False
        self.name = "fake"

    def send(self, message, response_to=0):
        self.sent.append((message, response_to))

    def refuse(self, request_id, code, text):
        self.send(m.Error(code=int(code), ref_request_id=request_id, text=text[:200]), response_to=request_id)


def _names_core(clock, tracker_key=None):
    from orb.tracker import names as tn
    from orb.tracker import registry as reg
    from tests import _records

    key = tracker_key or _records.key("names-tracker")
    registry = reg.Registry(clock, key)
    return tn.Names(clock, registry), registry


class TrackerNamesTests(unittest.SynchronousTestCase):
    def setUp(self):
        from twisted.internet.task import Clock

        from orb.protocol import federation as fed
        from tests import _records

        self.fed = fed
        self.clock = Clock()
        self.clock.advance(NOW)
        self.names, self.registry = _names_core(self.clock)
        self.owner = _records.key("owner")
        self.stranger = _records.key("stranger")
        self.label = nm.owner_label(self.owner.public_bytes)
        self.fid, self.fid2 = fidmod.to_text(FID), fidmod.to_text(FID2)
        for fid in (self.fid, self.fid2):
            self.registry.accept(_records.function_record(self.owner, fid))
        self.session = FakeSession()

    def name(self, seq, fid=FID, key=None, name="adder", **kw):
        return self.send(nm.make_name(key or self.owner, name, seq, fid, **kw))

    def deprecate(self, seq, fid=FID, key=None, **kw):
        return self.send(nm.make_deprecate(key or self.owner, fid, seq, **kw))

    def send(self, message):
        self.session.sent.clear()
        self.names.handlers()[message.TYPE](self.session, message, 5)
        [(ack, response_to)] = self.session.sent
        self.assertEqual(response_to, 5)
        self.assertIsInstance(ack, m.StatementAck)
        return ack

    def stored_names(self):
        return self.registry.records(self.fed.NAME.name)

    def test_owner_names_a_function(self):
        """An owner's NAME is taken in (status 0, its seq) and the name resolves to the fid."""
        ack = self.name(1)
        self.assertEqual((ack.status, ack.seq), (0, 1))
        view = self.names.resolve(self.label, "adder")
        self.assertEqual((view.fid, view.seq, view.deprecated, view.gone), (self.fid, 1, False, False))
        self.assertEqual(view.owner_key, self.owner.public_bytes)
        self.assertEqual(view.history, ((1, self.fid, False),))
        self.assertEqual(self.names.serving_fid(self.label, "adder"), self.fid)
        self.assertEqual([v.name for v in self.names.names_of_owner(self.label)], ["adder"])
        doc = view.to_dict()
        self.assertEqual((doc["serving"], doc["owner"], doc["history"][0]["status"]), (self.fid, self.label, "active"))
        import json

        json.dumps(doc)  # plain JSON for the REST API

    def test_non_owner_name_is_denied_and_stores_nothing(self):
        """A NAME signed by someone other than the fid's owner is refused `denied`; nothing is stored."""
        ack = self.name(1, key=self.stranger)
        self.assertEqual(ack.status, ErrorCode.DENIED)
        self.assertEqual(self.stored_names(), [])
        self.assertEqual(len(self.names.name_history), 0)

    def test_forged_signature_is_denied(self):
        """A NAME whose signature does not match its content is refused `denied`."""
        forged = attrs.evolve(nm.make_name(self.owner, "adder", 1, FID), seq=2)
        self.assertEqual(self.send(forged).status, ErrorCode.DENIED)
        self.assertEqual(self.stored_names(), [])

    def test_name_for_a_missing_fid_is_not_found(self):
        """A NAME for a fid no one deployed is refused `not_found` and stores nothing."""
        ack = self.name(1, fid=b"\x01" + b"\x33" * 32)
        self.assertEqual(ack.status, ErrorCode.NOT_FOUND)
        self.assertEqual(self.stored_names(), [])

    def test_lower_or_equal_seq_is_stale_and_replay_changes_nothing(self):
        """A lower or equal seq is refused `stale` with the held seq; an exact replay answers 0, held seq."""
        self.name(5)
        lower = self.name(4, fid=FID2)
        equal = self.name(5, fid=FID2)
        self.assertEqual((lower.status, lower.seq), (ErrorCode.STALE, 5))
        self.assertEqual((equal.status, equal.seq), (ErrorCode.STALE, 5))
        replay = self.name(5)
        self.assertEqual((replay.status, replay.seq), (0, 5))
        self.assertEqual(self.names.resolve(self.label, "adder").fid, self.fid)
        self.assertEqual(len(self.names.name_history), 1)
        self.assertEqual(self.registry.seq, 3)  # two functions and one name: nothing more replicated

    def test_update_moves_the_name_and_keeps_history(self):
        """A higher seq moves the name to the new fid; the history lists both, newest first."""
        self.name(1)
        self.clock.advance(10)
        self.name(2, fid=FID2)
        view = self.names.resolve(self.label, "adder")
        self.assertEqual((view.fid, view.seq), (self.fid2, 2))
        self.assertEqual(view.history, ((2, self.fid2, False), (1, self.fid, False)))
        versions = self.names.history(self.label, "adder")
        self.assertEqual([v.received_at for v in versions], [NOW + 10, NOW])
        self.assertEqual(self.names.serving_fid(self.label, "adder"), self.fid2)

    def test_deprecating_the_newest_serves_the_previous(self):
        """When the newest version is deprecated, the name serves the newest one that is not."""
        self.name(1)
        self.name(2, fid=FID2)
        self.assertEqual(self.deprecate(1, fid=FID2, successor=FID).status, 0)
        view = self.names.resolve(self.label, "adder")
        self.assertTrue(view.deprecated)
        self.assertEqual(view.successor, self.fid)
        self.assertEqual(view.serving, self.fid)
        self.assertEqual(view.history, ((2, self.fid2, True), (1, self.fid, False)))

    def test_deprecation_and_sunset(self):
        """A deprecation is held with its successor and sunset; past the sunset the fid is gone."""
        ack = self.deprecate(1, successor=FID2, sunset=NOW + 60)
        self.assertEqual((ack.status, ack.seq), (0, 1))
        status = self.names.fid_status(self.fid)
        self.assertEqual((status.deprecated, status.successor, status.sunset, status.gone, status.seq),
                         (True, self.fid2, NOW + 60, False, 1))
        self.clock.advance(60)
        self.assertTrue(self.names.fid_status(self.fid).gone)
        self.assertTrue(self.names.is_gone(self.fid))
        self.assertIsNone(self.names.fid_status(self.fid2))

    def test_undeprecate_before_sunset_only(self):
        """Undeprecation works before the sunset; after it the tracker answers `gone` and keeps the record."""
        self.deprecate(1, sunset=NOW + 60)
        self.assertEqual(self.deprecate(2, deprecated=False).status, 0)
        self.assertFalse(self.names.fid_status(self.fid).deprecated)
        self.deprecate(3, sunset=NOW + 60)
        self.clock.advance(61)
        ack = self.deprecate(4, deprecated=False)
        self.assertEqual((ack.status, ack.seq), (ErrorCode.GONE, 3))
        self.assertTrue(self.names.is_gone(self.fid))

    def test_bad_deprecations_store_nothing(self):
        """A non-owner's, a past sunset's and a stale DEPRECATE each get their code; nothing is stored."""
        self.assertEqual(self.deprecate(1, key=self.stranger).status, ErrorCode.DENIED)
        self.assertEqual(self.deprecate(1, sunset=NOW - 1).status, ErrorCode.INVALID)
        self.assertEqual(self.deprecate(1, fid=b"\x01" + b"\x44" * 32).status, ErrorCode.NOT_FOUND)
        self.assertEqual(self.deprecate(1, successor=FID).status, ErrorCode.INVALID)
        self.assertIsNone(self.names.fid_status(self.fid))
        self.assertEqual(self.registry.records(self.fed.DEPRECATION.name), [])
        self.deprecate(3)
        stale = self.deprecate(2, sunset=NOW + 5)
        self.assertEqual((stale.status, stale.seq), (ErrorCode.STALE, 3))
        self.assertEqual(self.names.fid_status(self.fid).sunset, 0)

    def test_name_for_a_gone_fid_is_refused(self):
        """A NAME pointing at a fid past its sunset is refused `gone`."""
        self.deprecate(1, sunset=NOW + 1)
        self.clock.advance(2)
        self.assertEqual(self.name(1).status, ErrorCode.GONE)
        self.assertIsNone(self.names.resolve(self.label, "adder"))

    def test_all_versions_gone_serves_nothing(self):
        """When every version of a name is gone, the name serves no fid."""
        self.name(1)
        self.deprecate(1, sunset=NOW + 1)
        self.clock.advance(1)
        view = self.names.resolve(self.label, "adder")
        self.assertTrue(view.gone)
        self.assertIsNone(view.serving)

    def test_history_is_bounded(self):
        """Only the last 64 versions of a name are kept."""
        for seq in range(1, 71):
            self.name(seq, fid=FID if seq % 2 else FID2)
        versions = self.names.history(self.label, "adder")
        self.assertEqual(len(versions), 64)
        self.assertEqual((versions[0].seq, versions[-1].seq), (70, 7))

    def test_unknown_names_resolve_to_none(self):
        """Unknown or malformed names and owner labels resolve to nothing."""
        for label, name in ((self.label, "nope"), ("x" * 32, "adder"), (self.label, "Bad"), ("short", "adder")):
            self.assertIsNone(self.names.resolve(label, name))
            self.assertIsNone(self.names.serving_fid(label, name))
            self.assertEqual(self.names.history(label, name), ())

    def test_non_owner_deprecation_from_federation_means_nothing(self):
        """A deprecation signed by another key, arriving by federation, does not deprecate the fid."""
        record = self.fed.DeprecationRecord.from_message(nm.make_deprecate(self.stranger, FID, 99, sunset=NOW + 1))
        change = self.fed.Change(b"\x07" * 32, 1, self.fed.DEPRECATION, record)
        self.registry.apply_remote(change)
        self.clock.advance(5)
        self.assertIsNone(self.names.fid_status(self.fid))
        self.assertEqual(self.deprecate(1).status, 0)  # the owner is not blocked by its seq 99


class OverTheWireTests(unittest.SynchronousTestCase):
    """Real tracker and peer cores joined in memory (tests/_memnet.py)."""

    def setUp(self):
        from orb.identity import NodeKey
        from tests._memnet import MemoryNet
        from tests._packages import function, open_store
        from tests._records import function_record

        self.net = MemoryNet()
        self.t1 = self.net.tracker("10.1.0.1")
        self.t2 = self.net.tracker("10.1.0.2", join=[("10.1.0.1", 7400)])
        self.owner = NodeKey.generate()
        self.label = nm.owner_label(self.owner.public_bytes)
        self.data, _ = function()
        self.raw = fidmod.fid_for(self.data)
        self.fid = fidmod.to_text(self.raw)
        for tracker in (self.t1, self.t2):
            tracker.registry.accept(function_record(self.owner, self.fid))
        self.store, self.data_dir = open_store(self, clock=self.net.clock)
        self.successResultOf(self.store.put(self.data))
        self.successResultOf(self.store.set_owner(self.raw, self.owner.public_bytes))
        self.open_store = open_store
        self.net.run(3)

    def now(self):
        return int(self.net.clock.seconds())

    def start_peer(self, home="10.1.0.1", host="10.2.0.1", store=None):
        peer = self.net.peer(host, trackers=[(home, 7400)], packages=store or self.store, outbound_peers=0,
                             outbound_trackers=1)
        self.net.run(2)
        return peer

    def owner_session(self, tracker_host="10.1.0.1"):
        """The owner's CLI: a peer without a store, connected to one tracker."""
        client = self.net.peer("10.9.0.1", trackers=[(tracker_host, 7400)], outbound_peers=0, outbound_trackers=1,
                               listen=False)
        self.net.run(2)
        tracker = next(t for t in (self.t1, self.t2) if t.local.advertise[0] == tracker_host)
        return client.table.get(tracker.node_id)

    def ask(self, session, message):
        d = session.request(message)
        self.net.run(1)
        return self.successResultOf(d)

    def test_name_and_deprecation_federate(self):
        """A NAME and a DEPRECATE taken in by one tracker resolve at the other, with the name's history."""
        session = self.owner_session()
        self.assertEqual(self.ask(session, nm.make_name(self.owner, "adder", 1, self.raw)).status, 0)
        self.assertEqual(self.ask(session, nm.make_deprecate(self.owner, self.raw, 1, sunset=self.now() + 60))
                         .status, 0)
        self.net.run(2)
        view = self.t2.names.resolve(self.label, "adder")
        self.assertEqual((view.fid, view.seq, view.deprecated), (self.fid, 1, True))
        self.assertEqual(view.history, ((1, self.fid, True),))
        self.assertTrue(self.t2.names.fid_status(self.fid).deprecated)
        self.net.run(61)
        self.assertTrue(self.t2.names.is_gone(self.fid))

    def test_deprecation_reaches_the_host_which_stops_at_the_sunset(self):
        """A deprecation reaches the fid's host; past the sunset the host answers `gone` and drops the package."""
        from orb.protocol.codes import ResultStatus

        peer = self.start_peer()
        sunset = self.now() + 30
        session = self.owner_session()
        self.assertEqual(self.ask(session, nm.make_deprecate(self.owner, self.raw, 1, sunset=sunset)).status, 0)
        self.net.run(1)
        self.assertEqual(self.store.deprecation(self.raw).seq, 1)
        self.assertIn(self.raw, peer.homing.functions)
        self.net.run(30)
        self.assertNotIn(self.raw, self.store)
        self.assertNotIn(self.raw, peer.homing.functions)
        to_peer = self.t1.table.get(peer.node_id)
        result = self.ask(to_peer, m.Invoke(fid=self.raw, deadline_ms=1000, token=b"", input=b"x"))
        self.assertEqual(result.status, ResultStatus.GONE)
        self.net.run(31)
        self.assertNotIn(self.fid, self.t1.registry.peer(peer.node_id).function_map)

    def test_a_late_host_learns_at_its_announce(self):
        """A host that joins after the deprecation gets it from its home tracker, federated from another."""
        session = self.owner_session("10.1.0.2")
        self.assertEqual(self.ask(session, nm.make_deprecate(self.owner, self.raw, 4, successor=FID2)).status, 0)
        self.net.run(2)
        self.start_peer(home="10.1.0.1")
        self.net.run(1)
        held = self.store.deprecation(self.raw)
        self.assertEqual((held.seq, held.successor), (4, FID2))

    def test_a_deprecation_taken_elsewhere_reaches_a_connected_host(self):
        """A deprecation sent to one tracker reaches a host homed at the other, by federation then a push."""
        self.start_peer(home="10.1.0.1")
        session = self.owner_session("10.1.0.2")
        self.assertEqual(self.ask(session, nm.make_deprecate(self.owner, self.raw, 2, sunset=self.now() + 600))
                         .status, 0)
        self.net.run(2)
        self.assertEqual(self.store.deprecation(self.raw).seq, 2)
        self.assertEqual(self.t1.names.counts["deprecations_pushed"], 1)

    def test_lookup_and_invoke_of_a_gone_fid(self):
        """LOOKUP of a fid past its sunset is refused `gone`; INVOKE through the tracker gets RESULT `gone`."""
        from orb.net.adapter import RemoteError
        from orb.protocol.codes import ResultStatus

        session = self.owner_session()
        self.ask(session, nm.make_deprecate(self.owner, self.raw, 1, sunset=self.now() + 5))
        self.net.run(6)
        d = session.request(m.Lookup(fid=self.raw, max_replicas=3))
        self.net.run(1)
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, ErrorCode.GONE)
        result = self.ask(session, m.Invoke(fid=self.raw, deadline_ms=1000, token=b"", input=b"x"))
        self.assertEqual(result.status, ResultStatus.GONE)

    def test_host_refuses_a_deprecation_not_from_the_owner(self):
        """A host refuses a DEPRECATE signed by another key than the owner it was told: `denied`."""
        from orb.identity import NodeKey

        peer = self.start_peer()
        to_peer = self.t1.table.get(peer.node_id)
        ack = self.ask(to_peer, nm.make_deprecate(NodeKey.generate(), self.raw, 1))
        self.assertEqual(ack.status, ErrorCode.DENIED)
        self.assertIsNone(self.store.deprecation(self.raw))
        ack = self.ask(to_peer, nm.make_deprecate(self.owner, b"\x01" + b"\x55" * 32, 1))
        self.assertEqual(ack.status, ErrorCode.NOT_FOUND)
        self.assertEqual(self.ask(to_peer, nm.make_deprecate(self.owner, self.raw, 2)).status, 0)
        self.assertEqual(self.ask(to_peer, nm.make_deprecate(self.owner, self.raw, 2)).status, 0)  # replay
        stale = self.ask(to_peer, nm.make_deprecate(self.owner, self.raw, 1, sunset=1))
        self.assertEqual((stale.status, stale.seq), (ErrorCode.STALE, 2))

    def test_a_restarted_host_keeps_the_sunset(self):
        """A host restarted after taking a deprecation still drops the fid at the sunset."""
        from orb.peer.deprecation import Deprecations

        sunset = self.now() + 20
        deps = Deprecations(self.net.clock, self.store)
        self.assertEqual(deps.take(nm.make_deprecate(self.owner, self.raw, 1, sunset=sunset)).status, 0)
        deps.stop()  # the host goes down
        self.successResultOf(self.store.db.close())
        store, _ = self.open_store(self, self.data_dir, clock=self.net.clock)
        self.assertEqual(store.deprecation(self.raw).sunset, sunset)
        again = Deprecations(self.net.clock, store)
        again.start()
        self.net.clock.advance(21)
        self.assertNotIn(self.raw, store)
        self.assertTrue(again.is_gone(self.raw))


class HistoryStoreTests(unittest.SynchronousTestCase):
    def test_history_survives_a_restart(self):
        """A tracker restarted from its names file still knows every version of its names, and when it got them."""
        from twisted.internet.task import Clock

        from orb._db import Database
        from orb.tracker import names as tn
        from tests import _records

        clock = Clock()
        clock.advance(NOW)
        names, registry = _names_core(clock, _records.key("t"))
        owner = _records.key("owner")
        for fid in (FID, FID2):
            registry.accept(_records.function_record(owner, fidmod.to_text(fid)))
        for seq in (1, 2, 3):
            clock.advance(1)
            self.assertEqual(names.take_name(nm.make_name(owner, "adder", seq, FID if seq % 2 else FID2)).status, 0)
        path = self.mktemp() + ".sqlite"
        db = self.successResultOf(Database.open(None, path, tn.MIGRATIONS, inline=True))
        self.successResultOf(tn.save_history(names.name_history, db))
        self.successResultOf(tn.save_history(names.name_history, db))  # nothing dirty: nothing rewritten
        self.successResultOf(db.close())
        db = self.successResultOf(Database.open(None, path, tn.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        history = self.successResultOf(tn.load_history(db))
        entries = history.entries(owner.public_bytes, "adder")
        self.assertEqual([(e.seq, e.received_at) for e in entries], [(3, NOW + 3), (2, NOW + 2), (1, NOW + 1)])
        again = tn.Names(clock, registry, history=history)
        label = nm.owner_label(owner.public_bytes)
        self.assertEqual(len(again.resolve(label, "adder").history), 3)

    def test_total_rows_are_bounded(self):
        """Past the overall bound the longest history loses its oldest version."""
        from orb.tracker import names as tn

        history = tn.NameHistory(max_per_name=64, max_rows=10)
        for seq in range(1, 9):
            history.add(b"k" * 32, "a", tn.HistoryEntry(seq, "x", False, None, 0, 0.0))
        for seq in range(1, 5):
            history.add(b"k" * 32, "b", tn.HistoryEntry(seq, "x", False, None, 0, 0.0))
        self.assertEqual(len(history), 10)
        self.assertEqual([e.seq for e in history.entries(b"k" * 32, "a")], [8, 7, 6, 5, 4, 3])

    def test_registry_keeps_names_and_deprecations_across_a_restart(self):
        """The tracker's registry file keeps name and deprecation records; a reload verifies and serves them."""
        from twisted.internet.task import Clock

        from orb._db import Database
        from orb.protocol import federation as fed
        from orb.tracker import registry as reg
        from tests import _records

        clock = Clock()
        clock.advance(NOW)
        key, owner = _records.key("t"), _records.key("owner")
        registry = reg.Registry(clock, key)
        registry.accept(_records.function_record(owner, fidmod.to_text(FID)))
        registry.accept(fed.NameRecord.from_message(nm.make_name(owner, "adder", 2, FID)))
        registry.accept(fed.DeprecationRecord.from_message(nm.make_deprecate(owner, FID, 3, sunset=NOW + 9)))
        path = self.mktemp() + ".sqlite"
        db = self.successResultOf(Database.open(None, path, reg.MIGRATIONS, inline=True))
        self.successResultOf(registry.save(db))
        self.successResultOf(db.close())
        db = self.successResultOf(Database.open(None, path, reg.MIGRATIONS, inline=True))
        self.addCleanup(db.close)
        loaded = self.successResultOf(reg.Registry.load(db, clock, key))
        from orb.tracker import names as tn

        names = tn.Names(clock, loaded)
        label = nm.owner_label(owner.public_bytes)
        self.assertEqual(names.resolve(label, "adder").seq, 2)
        self.assertEqual(names.fid_status(fidmod.to_text(FID)).sunset, NOW + 9)
