"""Function ids: raw and text forms, and their validation."""

from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import fid


class FidTests(SynchronousTestCase):
    def test_text_round_trip_fits_a_dns_label(self):
        """A fid's text is 53 lowercase base32 characters, one DNS label, and reads back."""
        raw = fid.fid_for(b"package bytes")
        text = fid.to_text(raw)
        self.assertEqual(len(text), 53)
        self.assertRegex(text, r"^[a-z2-7]+$")
        self.assertEqual(fid.from_text(text), raw)

    def test_same_package_same_fid(self):
        """The same package bytes give the same fid; different bytes a different one."""
        self.assertEqual(fid.fid_for(b"x"), fid.fid_for(b"x"))
        self.assertNotEqual(fid.fid_for(b"x"), fid.fid_for(b"y"))

    def test_bad_fids(self):
        """Unknown algorithms, wrong lengths and non-canonical text are refused."""
        self.assertRaises(fid.FidError, fid.check, b"")
        self.assertRaises(fid.FidError, fid.check, b"\x02" + b"\x00" * 32)
        self.assertRaises(fid.FidError, fid.check, b"\x01" + b"\x00" * 31)
        for text in ("", "UPPER", "abc!", "a" * 64, "ab"):
            self.assertRaises(fid.FidError, fid.from_text, text)
