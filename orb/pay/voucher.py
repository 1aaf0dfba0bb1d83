# -*- test-case-name: tests.test_pay_voucher -*-
"""
The payment voucher: EIP-712 typed data that OrbEscrow pays from.

A voucher carries *cumulative* counters for one (fid, host, signer): the
requests served, the bytes transferred and the uptime epochs since the fid
was funded. The contract pays the difference between the counters and what
it already paid for that triple, so a host only ever needs the latest
voucher of each signer, and replaying an older one pays nothing.

    domain  = {name: "OrbEscrow", version: "1", chainId, verifyingContract}
    Voucher(bytes32 fid,address host,address signer,uint64 requests,
            uint64 bytes,uint64 epochs,uint64 expiry)
    digest  = keccak256(0x19 0x01 || domainSeparator || hashStruct(voucher))

Signatures are 65 bytes r || s || v with v in {27, 28} and s in the lower
half of the curve order (EIP-2), which is what ``ecrecover`` and
OpenZeppelin's ``ECDSA.recover`` accept; anything else is refused here
before it reaches a chain.

The encoding is written out here (a few lines of ``eth_abi``) rather than
taken from eth-account's private helpers; the tests check it against
``eth_account.messages.encode_typed_data`` and a fixed vector.

Pure: no I/O here. A host's store of vouchers is :mod:`orb.pay.book`.
"""

from __future__ import annotations

import json

import attrs
from eth_abi import encode as abi_encode
from eth_keys import keys
from eth_keys.exceptions import BadSignature as _EthKeysBadSignature
from eth_utils import is_checksum_address, is_hex_address, keccak, to_checksum_address

from orb.protocol import fid as fidmod

DOMAIN_NAME = "OrbEscrow"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
VOUCHER_TYPE = ("Voucher(bytes32 fid,address host,address signer,uint64 requests,uint64 bytes,"
                "uint64 epochs,uint64 expiry)")
DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)
VOUCHER_TYPEHASH = keccak(text=VOUCHER_TYPE)

UINT64_MAX = 2**64 - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
SIGNATURE_BYTES = 65
MAX_JSON_BYTES = 1024  # a canonical voucher is about 560 bytes
COUNTERS = ("requests", "bytes", "epochs")


class VoucherError(ValueError):
    """A voucher (or its JSON, or its signature) is not acceptable; the message says why."""


class BadSignature(VoucherError):
    """The signature is malformed, high-s, or was not made by the voucher's signer."""


class Expired(VoucherError):
    """The voucher's expiry has passed."""


class StaleVoucher(VoucherError):
    """A counter is lower than in the voucher already kept for that (fid, host, signer)."""


def _address(value, what):
    if not isinstance(value, str) or not is_hex_address(value):
        raise VoucherError(f"{what} must be a 0x-prefixed 20-byte hex address, not {value!r:.80}")
    if value != value.lower() and not is_checksum_address(value):
        raise VoucherError(f"{what} {value} has a wrong EIP-55 checksum (a typo?)")
    return to_checksum_address(value)


def _uint(value, what, top=UINT64_MAX):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise VoucherError(f"{what} must be an integer from 0 to {top}, not {value!r:.80}")
    return value


def fid_bytes32(raw_fid):
    """The on-chain fid: the 32-byte SHA-256 digest of a fid (bytes [1:], algorithm 0x01)."""
    fidmod.check(raw_fid)
    if raw_fid[0] != fidmod.ALGORITHM_SHA256:
        raise VoucherError(f"fid algorithm 0x{raw_fid[0]:02x} has no on-chain form")
    return bytes(raw_fid[1:])


def fid_from_bytes32(b32):
    """The raw fid (0x01 || digest) for an on-chain bytes32."""
    if not isinstance(b32, (bytes, bytearray)) or len(b32) != 32:
        raise VoucherError("an on-chain fid is 32 bytes")
    return bytes([fidmod.ALGORITHM_SHA256]) + bytes(b32)


@attrs.frozen
class Domain:
    """The EIP-712 domain: one chain and one OrbEscrow deployment."""

    chain_id: int = attrs.field(converter=lambda v: _uint(v, "chain_id", 2**256 - 1))
    contract: str = attrs.field(converter=lambda v: _address(v, "contract"))

    def separator(self):
        return keccak(abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [DOMAIN_TYPEHASH, keccak(text=DOMAIN_NAME), keccak(text=DOMAIN_VERSION), self.chain_id, self.contract],
        ))

    def typed_data_domain(self):
        """The domain as eth-account / eth_signTypedData_v4 want it."""
        return {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": self.chain_id,
                "verifyingContract": self.contract}


def _fid_field(value):
    if isinstance(value, (bytes, bytearray)) and len(value) == 32:
        return bytes(value)
    raise VoucherError("a voucher's fid is the 32-byte on-chain form (see fid_bytes32)")


@attrs.frozen
class Voucher:
    """One cumulative voucher (unsigned). ``fid`` is the 32-byte on-chain form."""

    fid: bytes = attrs.field(converter=_fid_field)
    host: str = attrs.field(converter=lambda v: _address(v, "host"))
    signer: str = attrs.field(converter=lambda v: _address(v, "signer"))
    requests: int = attrs.field(converter=lambda v: _uint(v, "requests"))
    bytes: int = attrs.field(converter=lambda v: _uint(v, "bytes"))
    epochs: int = attrs.field(converter=lambda v: _uint(v, "epochs"))
    expiry: int = attrs.field(converter=lambda v: _uint(v, "expiry"))

    def struct_hash(self):
        return keccak(abi_encode(
            ["bytes32", "bytes32", "address", "address", "uint64", "uint64", "uint64", "uint64"],
            [VOUCHER_TYPEHASH, self.fid, self.host, self.signer, self.requests, self.bytes, self.epochs,
             self.expiry],
        ))

    def digest(self, domain):
        """The 32 bytes that are signed: keccak256(0x1901 || domainSeparator || structHash)."""
        return keccak(b"\x19\x01" + domain.separator() + self.struct_hash())

    def as_tuple(self):
        """The ABI tuple a contract call takes for ``Voucher``."""
        return (self.fid, self.host, self.signer, self.requests, self.bytes, self.epochs, self.expiry)

    def typed_data(self, domain):
        """The full EIP-712 document (eth_signTypedData_v4, eth-account ``encode_typed_data``)."""
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
                ],
                "Voucher": [
                    {"name": "fid", "type": "bytes32"}, {"name": "host", "type": "address"},
                    {"name": "signer", "type": "address"}, {"name": "requests", "type": "uint64"},
                    {"name": "bytes", "type": "uint64"}, {"name": "epochs", "type": "uint64"},
                    {"name": "expiry", "type": "uint64"},
                ],
            },
            "primaryType": "Voucher",
            "domain": domain.typed_data_domain(),
            "message": {"fid": self.fid, "host": self.host, "signer": self.signer, "requests": self.requests,
                        "bytes": self.bytes, "epochs": self.epochs, "expiry": self.expiry},
        }

    def counters(self):
        return (self.requests, self.bytes, self.epochs)


def _signature_field(value):
    if not isinstance(value, (bytes, bytearray)) or len(value) != SIGNATURE_BYTES:
        raise BadSignature(f"a signature is {SIGNATURE_BYTES} bytes r || s || v")
    return bytes(value)


@attrs.frozen
class SignedVoucher:
    """A voucher, its domain and its 65-byte signature (not verified by construction: call ``verify``)."""

    domain: Domain
    voucher: Voucher
    signature: bytes = attrs.field(converter=_signature_field)

    def recover(self):
        """The address that signed; BadSignature on a malformed or high-s signature."""
        return recover(self.domain, self.voucher, self.signature)

    def verify(self, now=None):
        """Raise BadSignature unless the voucher's own signer signed it, and Expired when ``now``
        (unix seconds) is past its expiry. Returns self."""
        if self.recover() != self.voucher.signer:
            raise BadSignature(f"the signature is not {self.voucher.signer}'s")
        if now is not None and now > self.voucher.expiry:
            raise Expired(f"the voucher expired at {self.voucher.expiry} (now {int(now)})")
        return self

    # --- canonical JSON ------------------------------------------------------------------

    def to_dict(self):
        v = self.voucher
        return {
            "chain_id": self.domain.chain_id, "contract": self.domain.contract, "fid": "0x" + v.fid.hex(),
            "host": v.host, "signer": v.signer, "requests": v.requests, "bytes": v.bytes, "epochs": v.epochs,
            "expiry": v.expiry, "signature": "0x" + self.signature.hex(),
        }

    def to_json(self):
        """The canonical form: sorted keys, no spaces, checksummed addresses, lowercase 0x hex,
        integers as JSON numbers (Python reads uint64 exactly; a JavaScript reader must use BigInt)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_dict(cls, doc):
        if not isinstance(doc, dict):
            raise VoucherError("a voucher is a JSON object")
        want = {"chain_id", "contract", "fid", "host", "signer", "requests", "bytes", "epochs", "expiry",
                "signature"}
        if set(doc) != want:
            extra, missing = sorted(set(doc) - want), sorted(want - set(doc))
            raise VoucherError(f"voucher members wrong (unknown: {extra}, missing: {missing})")
        voucher = Voucher(fid=_hex_bytes(doc["fid"], 32, "fid"), host=doc["host"], signer=doc["signer"],
                          requests=doc["requests"], bytes=doc["bytes"], epochs=doc["epochs"],
                          expiry=doc["expiry"])
        domain = Domain(chain_id=doc["chain_id"], contract=doc["contract"])
        return cls(domain=domain, voucher=voucher,
                   signature=_hex_bytes(doc["signature"], SIGNATURE_BYTES, "signature"))

    @classmethod
    def from_json(cls, text):
        if isinstance(text, str):
            text = text.encode("utf-8")
        if not isinstance(text, (bytes, bytearray)) or len(text) > MAX_JSON_BYTES:
            raise VoucherError(f"a voucher's JSON is at most {MAX_JSON_BYTES} bytes")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise VoucherError("a voucher is not valid JSON") from None
        return cls.from_dict(doc)


def _hex_bytes(value, size, what):
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 2 + 2 * size:
        raise VoucherError(f"{what} must be 0x and {2 * size} hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise VoucherError(f"{what} must be 0x and {2 * size} hex digits") from None


# --- signing ------------------------------------------------------------------------------


def _private_key(key):
    """An eth_keys PrivateKey from 32 raw bytes, 0x hex, an eth_keys key or an eth-account LocalAccount."""
    if isinstance(key, keys.PrivateKey):
        return key
    raw = getattr(key, "key", key)  # LocalAccount.key
    if isinstance(raw, str):
        raw = bytes.fromhex(raw[2:] if raw.startswith("0x") else raw)
    return keys.PrivateKey(bytes(raw))


def address_of(key):
    """The checksummed address of a private key."""
    return _private_key(key).public_key.to_checksum_address()


def sign(domain, voucher, key):
    """Sign ``voucher`` with ``key`` (which must be the voucher's signer): a SignedVoucher, low-s, v in {27, 28}."""
    pk = _private_key(key)
    if pk.public_key.to_checksum_address() != voucher.signer:
        raise VoucherError(f"this key is {pk.public_key.to_checksum_address()}, the voucher's signer is "
                           f"{voucher.signer}")
    sig = pk.sign_msg_hash(voucher.digest(domain))
    r, s, v = sig.r, sig.s, sig.v
    if s > SECP256K1_HALF_N:  # eth_keys signs low-s already; keep the promise whatever the backend
        s, v = SECP256K1_N - s, v ^ 1
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27])
    return SignedVoucher(domain=domain, voucher=voucher, signature=raw)


def recover(domain, voucher, signature):
    """The checksummed address that made ``signature`` over ``voucher`` in ``domain``."""
    signature = _signature_field(signature)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise BadSignature(f"signature v must be 27 or 28, not {v}")
    if not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_HALF_N:
        raise BadSignature("signature r or s is out of range (s must be in the lower half, EIP-2)")
    try:
        sig = keys.Signature(vrs=(v - 27, r, s))
        return sig.recover_public_key_from_msg_hash(voucher.digest(domain)).to_checksum_address()
    except (_EthKeysBadSignature, ValueError) as e:
        raise BadSignature(f"no public key recovers from this signature ({e})") from None
