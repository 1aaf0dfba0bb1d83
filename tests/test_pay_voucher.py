"""
Vouchers (orb.pay.voucher): the EIP-712 encoding against a fixed vector and
eth-account, signatures (low-s, v 27/28), the canonical JSON, and the
host's VoucherBook (orb.pay.book).
"""

import os
import stat

from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.pay import book as B
from orb.pay import voucher as V
from orb.protocol import fid as fidmod

SIGNER_KEY = bytes.fromhex("11" * 32)
HOST_KEY = bytes.fromhex("22" * 32)
OTHER_KEY = bytes.fromhex("33" * 32)
CONTRACT = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
DOMAIN = V.Domain(chain_id=31337, contract=CONTRACT)
RAW_FID = fidmod.fid_for(b"orb test vector")

# The vector (also in the RFC): fid text afe4pvyhzpid6nzx4epryh2sppwdnggzbklpkbcbobyxy5fwntf2a,
# chainId 31337, verifyingContract 0xCcCC...cccC, signer key 0x11*32, host key 0x22*32.
VECTOR = {
    "fid32": "49c7d707cbd03f3737e11f1c1f527bec3698d90a96f5044170717c74b66ccba0",
    "signer": "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A",
    "host": "0x1563915e194D8CfBA1943570603F7606A3115508",
    "domain_typehash": "8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f",
    "voucher_typehash": "7a50eae67720179760bcd0aa860cc0756cfa14ec5d332b27cc1fd704e1d385cc",
    "domain_separator": "9b384c9db2fe2ae7146eec8352aec52c7beea2c67bc527777c4d9f3db0c91061",
    "struct_hash": "048bb753f3222b0bc6c6f3b51392ddc85466173bfd4920290d8d604d562ca51f",
    "digest": "555e0ab5c28f762e6a673256335ab8b8dcbce8937155652c261b7d73ae2a7228",
    "signature": "f008ac1f0ac9e13c2c0367ae4734cc0dca50c76fac7848f888db1a0bf1059b01"
                 "4c2161c155715948d7f5a7a6250f5da8368455acf2ca21a4a8f24f33e92056421b",
}


def voucher(requests=10000, nbytes=5 * 2**20, epochs=3, expiry=2_000_000_000, signer_key=SIGNER_KEY,
            host_key=HOST_KEY, raw_fid=RAW_FID):
    return V.Voucher(fid=V.fid_bytes32(raw_fid), host=V.address_of(host_key), signer=V.address_of(signer_key),
                     requests=requests, bytes=nbytes, epochs=epochs, expiry=expiry)


class VectorTests(SynchronousTestCase):
    def test_fixed_vector(self):
        """The domain separator, struct hash, digest and signature of the fixed voucher are the RFC's."""
        v = voucher()
        self.assertEqual(v.fid.hex(), VECTOR["fid32"])
        self.assertEqual((v.signer, v.host), (VECTOR["signer"], VECTOR["host"]))
        self.assertEqual(V.DOMAIN_TYPEHASH.hex(), VECTOR["domain_typehash"])
        self.assertEqual(V.VOUCHER_TYPEHASH.hex(), VECTOR["voucher_typehash"])
        self.assertEqual(DOMAIN.separator().hex(), VECTOR["domain_separator"])
        self.assertEqual(v.struct_hash().hex(), VECTOR["struct_hash"])
        self.assertEqual(v.digest(DOMAIN).hex(), VECTOR["digest"])
        self.assertEqual(V.sign(DOMAIN, v, SIGNER_KEY).signature.hex(), VECTOR["signature"])

    def test_matches_eth_account(self):
        """The hand-written encoding equals eth-account's EIP-712, so wallets sign the same bytes."""
        for v in (voucher(), voucher(requests=0, nbytes=0, epochs=0, expiry=0),
                  voucher(requests=V.UINT64_MAX, nbytes=V.UINT64_MAX, epochs=V.UINT64_MAX, expiry=V.UINT64_MAX)):
            msg = encode_typed_data(full_message=v.typed_data(DOMAIN))
            self.assertEqual(msg.header, DOMAIN.separator())
            self.assertEqual(msg.body, v.struct_hash())
            self.assertEqual(_hash_eip191_message(msg), v.digest(DOMAIN))
            self.assertEqual(bytes(Account.sign_message(msg, SIGNER_KEY).signature),
                             V.sign(DOMAIN, v, SIGNER_KEY).signature)

    def test_domain_binds_chain_and_contract(self):
        """A voucher signed for one chain or contract does not verify for another."""
        s = V.sign(DOMAIN, voucher(), SIGNER_KEY)
        for other in (V.Domain(chain_id=1, contract=CONTRACT),
                      V.Domain(chain_id=31337, contract="0x" + "dd" * 20)):
            moved = V.SignedVoucher(domain=other, voucher=s.voucher, signature=s.signature)
            self.assertRaises(V.BadSignature, moved.verify)


class SignatureTests(SynchronousTestCase):
    def test_sign_and_recover(self):
        """A signed voucher recovers its signer and verifies."""
        s = V.sign(DOMAIN, voucher(), SIGNER_KEY)
        self.assertEqual(s.recover(), V.address_of(SIGNER_KEY))
        self.assertIs(s.verify(now=1_000), s)
        self.assertIn(s.signature[64], (27, 28))

    def test_wrong_key_refused(self):
        """Signing with a key that is not the voucher's signer is refused before anything is signed."""
        self.assertRaises(V.VoucherError, V.sign, DOMAIN, voucher(), OTHER_KEY)

    def test_forged_signature(self):
        """A voucher whose counters were raised after signing fails verification."""
        s = V.sign(DOMAIN, voucher(requests=10), SIGNER_KEY)
        forged = V.SignedVoucher(domain=DOMAIN, voucher=voucher(requests=10_000), signature=s.signature)
        self.assertRaises(V.BadSignature, forged.verify)

    def test_high_s_refused(self):
        """The malleable twin (n - s, flipped v) of a valid signature is refused (EIP-2 low-s)."""
        s = V.sign(DOMAIN, voucher(), SIGNER_KEY)
        r, low_s, v = s.signature[:32], int.from_bytes(s.signature[32:64], "big"), s.signature[64]
        twin = r + (V.SECP256K1_N - low_s).to_bytes(32, "big") + bytes([55 - v])
        bad = V.SignedVoucher(domain=DOMAIN, voucher=s.voucher, signature=twin)
        self.assertRaises(V.BadSignature, bad.verify)

    def test_bad_v_and_zero_r(self):
        """v other than 27/28 and r = 0 are refused."""
        s = V.sign(DOMAIN, voucher(), SIGNER_KEY)
        for sig in (s.signature[:64] + b"\x00", bytes(32) + s.signature[32:]):
            self.assertRaises(V.BadSignature, V.SignedVoucher(domain=DOMAIN, voucher=s.voucher, signature=sig).verify)
        self.assertRaises(V.BadSignature, V.SignedVoucher, domain=DOMAIN, voucher=s.voucher, signature=b"\x00" * 64)

    def test_expired(self):
        """A voucher past its expiry is refused."""
        s = V.sign(DOMAIN, voucher(expiry=100), SIGNER_KEY)
        s.verify(now=100)
        self.assertRaises(V.Expired, s.verify, now=101)

    def test_fields_checked(self):
        """Counters out of uint64, bad addresses, bad checksums and short fids are refused."""
        good = dict(fid=bytes(32), host=V.address_of(HOST_KEY), signer=V.address_of(SIGNER_KEY), requests=1,
                    bytes=1, epochs=1, expiry=1)
        V.Voucher(**good)
        for k, bad in [("requests", -1), ("bytes", 2**64), ("epochs", True), ("expiry", "1"), ("fid", bytes(31)),
                       ("host", "0x1234"), ("signer", V.address_of(SIGNER_KEY).swapcase()[0:2] +
                                            V.address_of(SIGNER_KEY)[2:].swapcase())]:
            self.assertRaises(V.VoucherError, V.Voucher, **{**good, k: bad})

    def test_fid_bytes32(self):
        """The on-chain fid is the SHA-256 digest of the fid, and converts back."""
        self.assertEqual(V.fid_bytes32(RAW_FID), RAW_FID[1:])
        self.assertEqual(V.fid_from_bytes32(RAW_FID[1:]), RAW_FID)
        self.assertRaises(ValueError, V.fid_bytes32, RAW_FID[:-1])


class JsonTests(SynchronousTestCase):
    def test_round_trip_canonical(self):
        """The canonical JSON reads back to the same voucher, and writes the same bytes again."""
        s = V.sign(DOMAIN, voucher(), SIGNER_KEY)
        text = s.to_json()
        self.assertNotIn(" ", text)
        back = V.SignedVoucher.from_json(text)
        self.assertEqual(back, s)
        self.assertEqual(back.to_json(), text)
        back.verify()

    def test_bad_json(self):
        """Oversized, non-object, missing or extra members, bad hex and bad types are refused with VoucherError."""
        doc = V.sign(DOMAIN, voucher(), SIGNER_KEY).to_dict()
        import json

        cases = ["x" * 2000, "[]", "{", json.dumps({**doc, "extra": 1}),
                 json.dumps({k: v for k, v in doc.items() if k != "expiry"}),
                 json.dumps({**doc, "fid": "0x12"}), json.dumps({**doc, "signature": "0x" + "zz" * 65}),
                 json.dumps({**doc, "requests": 1.5}), json.dumps({**doc, "chain_id": -1}), "[" * 600]
        for text in cases:
            self.assertRaises(V.VoucherError, V.SignedVoucher.from_json, text)


class BookTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1_000)
        self.book = B.VoucherBook(os.path.join(self.dir, "vouchers.sqlite"), max_rows=3, clock=self.clock)
        self.addCleanup(self.book.close)

    def signed(self, **kw):
        return V.sign(DOMAIN, voucher(**kw), kw.get("signer_key", SIGNER_KEY))

    def test_file_private(self):
        """The book's file is mode 0600 and in WAL mode."""
        mode = stat.S_IMODE(os.stat(self.book.path).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertEqual(self.book._conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_keeps_latest(self):
        """A newer voucher replaces the kept one; the same one again changes nothing."""
        self.assertTrue(self.book.add(self.signed(requests=5)))
        self.assertTrue(self.book.add(self.signed(requests=9)))
        self.assertFalse(self.book.add(self.signed(requests=9)))
        [entry] = self.book.latest()
        self.assertEqual(entry.signed.voucher.requests, 9)
        self.assertEqual(len(self.book), 1)

    def test_refuses_lower(self):
        """A voucher with any counter lower than the kept one is refused and the kept one stays."""
        self.book.add(self.signed(requests=9, epochs=3))
        self.assertRaises(V.StaleVoucher, self.book.add, self.signed(requests=8, epochs=4))
        self.assertRaises(V.StaleVoucher, self.book.add, self.signed(requests=10, epochs=2))
        self.assertEqual(self.book.latest()[0].signed.voucher.counters()[0], 9)

    def test_per_signer(self):
        """Each signer's vouchers are kept apart."""
        self.book.add(self.signed(requests=9))
        self.book.add(self.signed(requests=2, signer_key=OTHER_KEY))
        self.assertEqual(len(self.book.latest()), 2)
        self.assertEqual(self.book.latest(signer=V.address_of(OTHER_KEY))[0].signed.voucher.requests, 2)

    def test_refuses_forged_and_expired(self):
        """The book verifies what it is given: a forged or expired voucher is not stored."""
        good = self.signed(requests=1)
        forged = V.SignedVoucher(domain=DOMAIN, voucher=voucher(requests=99), signature=good.signature)
        self.assertRaises(V.BadSignature, self.book.add, forged)
        self.assertRaises(V.Expired, self.book.add, self.signed(expiry=999))
        self.assertEqual(len(self.book), 0)

    def test_other_host_refused(self):
        """A host does not keep vouchers that pay someone else."""
        self.assertRaises(V.VoucherError, self.book.add, self.signed(), host=V.address_of(OTHER_KEY))

    def test_bounded(self):
        """The book holds at most max_rows (fid, host, signer) rows; updates still pass when full."""
        for i in range(3):
            self.book.add(self.signed(raw_fid=fidmod.fid_for(b"%d" % i)))
        self.assertRaises(B.BookFull, self.book.add, self.signed(raw_fid=fidmod.fid_for(b"new")))
        self.assertTrue(self.book.add(self.signed(raw_fid=fidmod.fid_for(b"0"), requests=20_000)))

    def test_claimable_and_mark(self):
        """Claimable lists grown vouchers; after mark_claimed they leave the list until they grow again."""
        self.book.add(self.signed(requests=5))
        self.assertEqual(len(self.book.claimable()), 1)
        self.book.mark_claimed([e.signed for e in self.book.claimable()], "0xabc")
        self.assertEqual(self.book.claimable(), [])
        self.book.add(self.signed(requests=6))
        [entry] = self.book.claimable()
        self.assertEqual((entry.claimed, entry.claim_tx), ((5, 5 * 2**20, 3), "0xabc"))

    def test_persists_and_prunes(self):
        """The book survives a reopen; expired vouchers are pruned."""
        self.book.add(self.signed(requests=5, expiry=2_000))
        self.book.close()
        book = B.VoucherBook(self.book.path, clock=self.clock)
        self.addCleanup(book.close)
        self.assertEqual(book.latest()[0].signed.voucher.requests, 5)
        self.assertEqual(book.prune_expired(now=1_500), 0)
        self.assertEqual(book.prune_expired(now=2_001), 1)
        self.assertEqual(len(book), 0)

    def test_uint64_counters_stored_exactly(self):
        """Counters above SQLite's signed 64-bit range are kept exactly."""
        self.book.add(self.signed(requests=V.UINT64_MAX, nbytes=2**63, epochs=0))
        self.assertEqual(self.book.latest()[0].signed.voucher.counters(), (V.UINT64_MAX, 2**63, 0))
