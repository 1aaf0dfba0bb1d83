# -*- test-case-name: tests.test_contract -*-
"""
The OrbEscrow contract from Python: its compiled artifact, deployment, and thin
typed wrappers over its calls (web3.py).

The artifact is ``contracts/build/OrbEscrow.json``, compiled by the solc pinned
in ``contracts/package.json`` (``node contracts/compile.js``) and committed;
``tests/test_contract.py`` fails when it differs from a fresh compile.

Every call here is blocking (a JSON-RPC round trip, or py-evm executing in
process): daemons call them through ``deferToThread``, never on the reactor.

``account`` arguments are either an address the node unlocks (eth-tester's
accounts, a dev node) or an ``eth_account`` ``LocalAccount``, whose
transactions are signed here and sent raw.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import attrs
from eth_utils import event_abi_to_log_topic, function_abi_to_4byte_selector, to_checksum_address

from orb.protocol import fid as fidmod

BUILD_DIR = Path(__file__).resolve().parents[2] / "contracts" / "build"
#: Overrides where artifacts are read from (an installed, non-editable orb).
ARTIFACT_DIR_ENV = "ORB_CONTRACTS_BUILD"

#: EIP-712 domain name and version of every OrbEscrow.
DOMAIN_NAME = "OrbEscrow"
DOMAIN_VERSION = "1"
#: The EIP-712 voucher type; the Solidity struct calls ``bytes`` ``bytes_``.
VOUCHER_FIELDS = (
    ("fid", "bytes32"),
    ("host", "address"),
    ("signer", "address"),
    ("requests", "uint64"),
    ("bytes", "uint64"),
    ("epochs", "uint64"),
    ("expiry", "uint64"),
)
MAX_U64 = 2**64 - 1
#: A bound on one claimBatch, well inside a 30M block (about 25k gas a voucher).
MAX_BATCH = 200
#: Gas limit for one transaction, so that estimation's error surfaces as a revert
#: before sending rather than a stuck transaction.
TX_GAS_CAP = 29_000_000
#: Blocks per ``eth_getLogs`` request when scanning Claimed events (public nodes refuse wide ranges).
LOG_CHUNK_BLOCKS = 10_000
#: The most Claimed events one scan returns; past it the result says it was truncated.
MAX_CLAIM_EVENTS = 100_000


class EscrowError(Exception):
    """A contract call reverted; ``name`` is the custom error's name (or None)."""

    def __init__(self, name: str | None, args: tuple, raw: Any = None):
        super().__init__(f"{name or 'revert'}{args!r}" if args else (name or "revert"))
        self.name = name
        self.error_args = args
        self.raw = raw


def load_artifact(name: str = "OrbEscrow") -> dict:
    """The compiled artifact ``name`` (abi, bytecode, deployedBytecode, solcVersion, evmVersion)."""
    base = Path(os.environ.get(ARTIFACT_DIR_ENV) or BUILD_DIR)
    with open(base / f"{name}.json", encoding="utf-8") as f:
        artifact = json.load(f)
    for key in ("abi", "bytecode", "deployedBytecode", "solcVersion", "evmVersion"):
        if key not in artifact:
            raise ValueError(f"{base / name}.json has no {key!r}")
    return artifact


def fid_key(fid: bytes | str) -> bytes:
    """A fid's on-chain key: the 32-byte SHA-256 digest (raw fid bytes [1:]).

    Takes the raw fid (algorithm byte + digest), its base32 text, or already
    the 32-byte key.
    """
    if isinstance(fid, str):
        fid = fidmod.from_text(fid)
    fid = bytes(fid)
    if len(fid) == 32:
        return fid
    fidmod.check(fid)
    if fid[0] != fidmod.ALGORITHM_SHA256:
        raise fidmod.FidError("only SHA-256 fids can be funded")
    return fid[1:]


@attrs.frozen
class Voucher:
    """A cumulative voucher, as signed (EIP-712) and as claimed."""

    fid: bytes = attrs.field(converter=fid_key)
    host: str = attrs.field(converter=to_checksum_address)
    signer: str = attrs.field(converter=to_checksum_address)
    requests: int = 0
    bytes: int = 0
    epochs: int = 0
    expiry: int = MAX_U64

    def __attrs_post_init__(self):
        for name in ("requests", "bytes", "epochs", "expiry"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= MAX_U64:
                raise ValueError(f"voucher {name} must be a uint64, not {value!r}")

    def as_tuple(self) -> tuple:
        """The ABI tuple ``claim`` takes."""
        return (self.fid, self.host, self.signer, self.requests, self.bytes, self.epochs, self.expiry)

    def message(self) -> dict:
        """The EIP-712 message (field names of the type, ``bytes`` included)."""
        return {name: getattr(self, name) for name, _ in VOUCHER_FIELDS}


def typed_data(chain_id: int, escrow_address: str, voucher: Voucher) -> dict:
    """The full EIP-712 message for ``eth_account.Account.sign_typed_data(full_message=...)``."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Voucher": [{"name": n, "type": t} for n, t in VOUCHER_FIELDS],
        },
        "primaryType": "Voucher",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(escrow_address),
        },
        "message": voucher.message(),
    }


@attrs.frozen
class FundInfo:
    owner: str | None  # None: unfunded
    balance_wei: int
    price_per_request_wei: int
    price_per_epoch_wei: int
    price_per_mib_wei: int
    withdrawable_at: int  # unix seconds; 0: no withdrawal pending

    @property
    def funded(self) -> bool:
        return self.owner is not None


@attrs.frozen
class Paid:
    requests: int
    bytes: int
    epochs: int


@attrs.frozen
class Claim:
    """One Claimed event: ``requests``, ``bytes`` and ``epochs`` are the NEW cumulative counters paid for
    (fid, host, signer) after this claim; ``amount_wei`` is what this claim paid."""

    host: str
    signer: str
    requests: int
    bytes: int
    epochs: int
    amount_wei: int
    block: int
    tx: str  # 0x-prefixed hex
    log_index: int


@attrs.frozen
class ClaimScan:
    """The Claimed events of one fid in blocks ``from_block`` to ``to_block`` (both included, complete).

    When ``truncated``, the scan stopped at the cap before the block range asked for was covered:
    ``to_block`` is then the last block all of whose claims are in ``claims``, and a caller can go on from
    ``to_block + 1``.
    """

    claims: tuple[Claim, ...]
    from_block: int
    to_block: int
    truncated: bool
    underpaid: tuple["Underpaid", ...] = ()  # claims that owed more than the balance held, in the same blocks


@attrs.frozen
class Underpaid:
    """One Underpaid event: a claim owed ``unpaid_wei`` more than the fid's balance held (its counters still
    advanced: that work is settled unpaid)."""

    host: str
    signer: str
    unpaid_wei: int
    block: int
    tx: str
    log_index: int


@attrs.frozen
class HostPaid:
    """What one host was paid for a fid: counters summed over signers (each signer's latest cumulative ones)."""

    host: str
    requests: int
    bytes: int
    epochs: int
    amount_wei: int
    claims: int
    last_block: int


def _scan(events, from_block, to_block, truncated):
    return ClaimScan(tuple(e for e in events if isinstance(e, Claim)), from_block, to_block, truncated,
                     tuple(e for e in events if isinstance(e, Underpaid)))


def paid_by_host(claims: Iterable[Claim]) -> list[HostPaid]:
    """Per host, the requests, bytes and epochs paid (per signer the highest cumulative counter, summed over
    signers: a channel's counters only grow, so its highest is its latest) and the wei received; most paid
    first."""
    latest: dict[tuple[str, str], tuple[int, int, int]] = {}
    wei: dict[str, int] = {}
    count: dict[str, int] = {}
    last: dict[str, int] = {}
    for c in claims:
        old = latest.get((c.host, c.signer), (0, 0, 0))
        latest[(c.host, c.signer)] = (max(old[0], c.requests), max(old[1], c.bytes), max(old[2], c.epochs))
        wei[c.host] = wei.get(c.host, 0) + c.amount_wei
        count[c.host] = count.get(c.host, 0) + 1
        last[c.host] = max(last.get(c.host, 0), c.block)
    counters = {h: [0, 0, 0] for h in wei}
    for (host, _signer), values in latest.items():
        for i, v in enumerate(values):
            counters[host][i] += v
    out = [HostPaid(h, *counters[h], wei[h], count[h], last[h]) for h in wei]
    out.sort(key=lambda p: (-p.amount_wei, -p.requests, p.host))
    return out


ZERO_ADDRESS = "0x" + "00" * 20


class Escrow:
    """One deployed OrbEscrow."""

    def __init__(self, w3, address: str, artifact: dict | None = None):
        self.w3 = w3
        self.artifact = artifact or load_artifact()
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=self.artifact["abi"])
        self._errors = _error_table(self.artifact["abi"])
        self._chain_id = None

    # -- views
    def funds(self, fid, block="latest") -> FundInfo:
        owner, balance, p_req, p_ep, p_mib, at = self._view("funds", fid_key(fid), block=block)
        return FundInfo(None if int(owner, 16) == 0 else owner, balance, p_req, p_ep, p_mib, at)

    def is_signer(self, fid, signer: str, block="latest") -> bool:
        return self._view("isSigner", fid_key(fid), to_checksum_address(signer), block=block)

    def paid(self, fid, host: str, signer: str, block="latest") -> Paid:
        return Paid(*self._view("paid", fid_key(fid), to_checksum_address(host), to_checksum_address(signer),
                                block=block))

    def credit(self, who: str) -> int:
        return self._view("credit", to_checksum_address(who))

    def withdraw_delay_s(self) -> int:
        return self._view("withdrawDelay")

    def chain_id(self) -> int:
        # A contract address lives on one chain: asked once.
        if self._chain_id is None:
            self._chain_id = self.w3.eth.chain_id
        return self._chain_id

    def typed_data(self, voucher: Voucher) -> dict:
        return typed_data(self.chain_id(), self.address, voucher)

    def voucher_digest(self, voucher: Voucher) -> bytes:
        """The digest the contract recovers the signer from (for cross-checks)."""
        return bytes(self._view("voucherDigest", voucher.as_tuple()))

    # -- transactions (each returns the mined receipt)
    def fund(self, account, fid, *, value_wei: int, price_per_request_wei: int,
             price_per_epoch_wei: int = 0, price_per_mib_wei: int = 0, signers: Iterable[str] = ()):
        signers = [to_checksum_address(s) for s in signers]
        return self._transact(account, "fund", fid_key(fid), price_per_request_wei,
                              price_per_epoch_wei, price_per_mib_wei, signers, value_wei=value_wei)

    def top_up(self, account, fid, *, value_wei: int):
        return self._transact(account, "topUp", fid_key(fid), value_wei=value_wei)

    def remove_signers(self, account, fid, signers: Iterable[str]):
        return self._transact(account, "removeSigners", fid_key(fid), [to_checksum_address(s) for s in signers])

    def request_withdrawal(self, account, fid):
        return self._transact(account, "requestWithdrawal", fid_key(fid))

    def cancel_withdrawal(self, account, fid):
        return self._transact(account, "cancelWithdrawal", fid_key(fid))

    def withdraw(self, account, fid):
        return self._transact(account, "withdraw", fid_key(fid))

    def withdraw_credit(self, account):
        return self._transact(account, "withdrawCredit")

    def claim(self, account, voucher: Voucher, signature: bytes):
        return self._transact(account, "claim", voucher.as_tuple(), bytes(signature))

    def claim_batch(self, account, vouchers: Sequence[Voucher], signatures: Sequence[bytes]):
        if len(vouchers) != len(signatures):
            raise ValueError("one signature per voucher")
        if len(vouchers) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} vouchers a batch")
        return self._transact(account, "claimBatch", [v.as_tuple() for v in vouchers],
                              [bytes(s) for s in signatures])

    # -- receipts
    def events(self, receipt) -> list[tuple[str, dict]]:
        """Every OrbEscrow event in ``receipt``, in order, as (name, args)."""
        out = []
        by_topic = _event_table(self.contract)
        for log in receipt["logs"]:
            if to_checksum_address(log["address"]) != self.address or not log["topics"]:
                continue
            event = by_topic.get(bytes(log["topics"][0]))
            if event is None:
                continue
            decoded = event.process_log(log)
            out.append((decoded["event"], dict(decoded["args"])))
        return out

    # -- logs
    def claims(self, fid, from_block: int = 0, to_block: int | str = "latest", *,
               chunk_blocks: int | None = None, max_events: int | None = None) -> ClaimScan:
        """The fid's Claimed events from ``from_block`` to ``to_block``, oldest first: ``eth_getLogs``
        filtered by this address and topics [Claimed, fid], ``chunk_blocks`` blocks a request (default
        LOG_CHUNK_BLOCKS), at most ``max_events`` events (default MAX_CLAIM_EVENTS; see ClaimScan).

        A stale or replayed voucher emits no Claimed event, so it appears nowhere here."""
        chunk_blocks = LOG_CHUNK_BLOCKS if chunk_blocks is None else chunk_blocks
        max_events = MAX_CLAIM_EVENTS if max_events is None else max_events
        if chunk_blocks < 1 or max_events < 1:
            raise ValueError("chunk_blocks and max_events must be at least 1")
        if not isinstance(to_block, int):
            to_block = self.w3.eth.get_block(to_block)["number"]
        if from_block < 0:
            raise ValueError("from_block must be at least 0")
        event = self.contract.events.Claimed()
        short = self.contract.events.Underpaid()
        topic = bytes(event_abi_to_log_topic(event.abi))
        short_topic = bytes(event_abi_to_log_topic(short.abi))
        key = fid_key(fid)
        found: list = []
        start = from_block
        while start <= to_block:
            end = min(start + chunk_blocks - 1, to_block)
            logs = self.w3.eth.get_logs({"address": self.address, "fromBlock": start, "toBlock": end,
                                         "topics": [["0x" + topic.hex(), "0x" + short_topic.hex()],
                                                    "0x" + key.hex()]})
            chunk = []
            for log in logs:
                # A node's answer is checked, not trusted: only this contract's Claimed and Underpaid events
                # of this fid.
                topics = [bytes(t) for t in log["topics"]]
                if (to_checksum_address(log["address"]) != self.address or len(topics) != 4
                        or topics[0] not in (topic, short_topic) or topics[1] != key or log.get("removed")):
                    continue
                where = dict(block=log["blockNumber"], tx="0x" + bytes(log["transactionHash"]).hex(),
                             log_index=log["logIndex"])
                if topics[0] == short_topic:
                    args = short.process_log(log)["args"]
                    chunk.append(Underpaid(host=to_checksum_address(args["host"]),
                                           signer=to_checksum_address(args["signer"]), unpaid_wei=args["unpaid"],
                                           **where))
                    continue
                args = event.process_log(log)["args"]
                chunk.append(Claim(host=to_checksum_address(args["host"]), signer=to_checksum_address(args["signer"]),
                                   requests=args["requests"], bytes=args["bytes_"], epochs=args["epochs"],
                                   amount_wei=args["amount"], **where))
            chunk.sort(key=lambda c: (c.block, c.log_index))
            if len(found) + len(chunk) > max_events:
                # Keep whole blocks only, so that the result covers from_block..to_block exactly.
                first_left_out = chunk[max_events - len(found)].block
                found += [c for c in chunk[:max_events - len(found)] if c.block < first_left_out]
                return _scan(found, from_block, first_left_out - 1, True)
            found += chunk
            start = end + 1
        return _scan(found, from_block, to_block, False)

    # -- plumbing
    def _view(self, name, *args, block="latest"):
        try:
            return self.contract.functions[name](*args).call(block_identifier=block)
        except Exception as e:
            raise self._translate(e) from e

    def _transact(self, account, name, *args, value_wei: int = 0):
        fn = self.contract.functions[name](*args)
        sender = getattr(account, "address", account)
        tx = {"from": to_checksum_address(sender), "value": value_wei}
        try:
            tx["gas"] = min(TX_GAS_CAP, int(fn.estimate_gas(tx) * 1.2) + 10_000)
            if hasattr(account, "sign_transaction"):
                tx = fn.build_transaction(
                    {**tx, "nonce": self.w3.eth.get_transaction_count(tx["from"], "pending")})
                signed = account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            else:
                tx_hash = fn.transact(tx)
        except Exception as e:
            raise self._translate(e) from e
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise EscrowError(None, (), receipt)
        return receipt

    def _translate(self, exc):
        """A web3 revert as an EscrowError naming the contract's custom error."""
        raw = _revert_data(exc)
        if raw is not None and len(raw) >= 4:
            entry = self._errors.get(raw[:4])
            if entry is not None:
                name, types = entry
                try:
                    args = tuple(to_checksum_address(a) if t == "address" else a
                                 for t, a in zip(types, self.w3.codec.decode(types, raw[4:])))
                except Exception:
                    args = ()
                return EscrowError(name, args, exc)
        return exc


def _revert_data(exc) -> bytes | None:
    """The revert data behind a web3 exception: a JSON-RPC node puts it in ``data``
    (hex); eth-tester's provider keeps the raw bytes on the exception it wraps."""
    seen = 0
    while exc is not None and seen < 8:
        seen += 1
        data = getattr(exc, "data", None)
        if isinstance(data, str) and data.startswith("0x"):
            try:
                return bytes.fromhex(data[2:])
            except ValueError:
                pass
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        first = exc.args[0] if exc.args else None
        if isinstance(first, (bytes, bytearray)):
            return bytes(first)
        if isinstance(first, str):
            # eth-tester's provider re-raises the revert data as the repr of bytes.
            text = first.removeprefix("execution reverted: ")
            if text[:2] in ("b'", 'b"') and len(text) < 4096:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, bytes):
                    return value
        exc = exc.__cause__ or exc.__context__
    return None


def deploy_escrow(w3, account, withdraw_delay_s: int, artifact: dict | None = None) -> Escrow:
    """Deploy a new OrbEscrow whose owners wait ``withdraw_delay_s`` seconds to withdraw."""
    if not 0 <= withdraw_delay_s <= MAX_U64:
        raise ValueError("withdraw_delay_s must be a uint64")
    artifact = artifact or load_artifact()
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    ctor = factory.constructor(withdraw_delay_s)
    sender = to_checksum_address(getattr(account, "address", account))
    tx = {"from": sender}
    tx["gas"] = min(TX_GAS_CAP, int(ctor.estimate_gas(tx) * 1.2) + 10_000)
    if hasattr(account, "sign_transaction"):
        tx = ctor.build_transaction({**tx, "nonce": w3.eth.get_transaction_count(sender, "pending")})
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    else:
        tx_hash = ctor.transact(tx)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise EscrowError(None, (), receipt)
    escrow = Escrow(w3, receipt["contractAddress"], artifact)
    escrow.deploy_receipt = receipt
    return escrow


def _error_table(abi) -> dict[bytes, tuple[str, list[str]]]:
    table = {}
    for entry in abi:
        if entry.get("type") == "error":
            types = [i["type"] for i in entry.get("inputs", [])]
            table[bytes(function_abi_to_4byte_selector(entry))] = (entry["name"], types)
    return table


def _event_table(contract) -> dict:
    table = {}
    for entry in contract.abi:
        if entry.get("type") == "event":
            table[bytes(event_abi_to_log_topic(entry))] = contract.events[entry["name"]]()
    return table


def error_selector(name: str, abi=None) -> bytes:
    """The 4-byte selector of the contract's custom error ``name`` (ClaimSkipped's reason)."""
    for sel, (n, _) in _error_table(abi or load_artifact()["abi"]).items():
        if n == name:
            return sel
    raise KeyError(name)
