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
