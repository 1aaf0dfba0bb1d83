# -*- test-case-name: tests.test_pay_cli -*-
"""
The payment verbs of the ``orb`` command:

    orb wallet new [--passphrase-file F]       make a wallet key (a keystore when a passphrase is given)
    orb wallet show                            its address
    orb wallet balance                         its ether on the chain (and escrow credit)
    orb wallet claim [--voucher FILE...]       submit the book's latest vouchers in one claimBatch
    orb wallet withdraw FID                    an owner's unspent funds: request, then (after the delay) withdraw
    orb wallet pay FID --host ADDR --requests N [--bytes N] [--epochs N] [--out FILE]
                                               as a caller the owner accepts as a signer: add to what this
                                               wallet owes the host and sign a fresh cumulative voucher
    orb fund FID --eth 0.1 --price-wei N [--epoch-price-wei N] [--mib-price-wei N] [--signer ADDR...]

Chain verbs take ``--eth-rpc URL`` (default ``$ORB_ETH_RPC``, else the
embedded chain at http://127.0.0.1:8545) and ``--escrow ADDRESS`` (default
``$ORB_ESCROW``, else what the embedded chain serves at ``/orb/escrow``).
The wallet is ``--wallet PATH`` (default ``$ORB_WALLET``, else
``$ORB_HOME/wallet.json``); an encrypted one opens with ``--passphrase-file``.

Every verb takes ``--json``. Exit statuses beyond :mod:`orb.cli._ui`'s:
12 no chain answered, 13 passphrase missing or wrong, 14 the wallet cannot
pay (value + gas), 15 the fid is not funded, 16 the escrow refused the call.
"""

import argparse
import decimal
import os
import sys

from orb.pay import client as _client  # light: web3 is imported when a verb connects
from orb.protocol import fid as _fid

from . import _config, _ui
from ._ui import CommandError


class _Lazy:
    """A module imported on first use: eth-abi and eth-keys cost ~0.3 s, which every other `orb`
    verb (and `orb --help`) should not pay."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


_voucher = _Lazy("orb.pay.voucher")
_book = _Lazy("orb.pay.book")
_wallet = _Lazy("orb.pay.wallet")

EXIT_NO_CHAIN = 12
EXIT_PASSPHRASE = 13
EXIT_FUNDS = 14
EXIT_UNFUNDED = 15
EXIT_REFUSED_BY_ESCROW = 16

EXIT_CODES_HELP = """\
payment exit statuses (besides those of orb --help):
  12   no Ethereum JSON-RPC node answered at --eth-rpc, or no OrbEscrow is known there
  13   the wallet is encrypted and the passphrase is missing or wrong
  14   the wallet cannot pay for this (value + gas)
  15   the function is not funded on the escrow
  16   the escrow refused the call (not the owner, a price decrease, the withdrawal delay...)"""

WEI_PER_ETH = 10**18
MAX_SIGNERS = 64
VOUCHER_BOOK_NAME = "vouchers.sqlite"


def register(sub) -> None:
    def chain_options(p):
        p.add_argument("--eth-rpc", metavar="URL", help="Ethereum JSON-RPC URL (default: $ORB_ETH_RPC, else "
                                                        f"the embedded chain at {_client.DEFAULT_RPC})")
        p.add_argument("--escrow", metavar="ADDRESS", help="OrbEscrow's address (default: $ORB_ESCROW, else "
                                                           "asked of the embedded chain)")
        p.add_argument("--timeout", type=float, default=_client.DEFAULT_TIMEOUT_S, metavar="S",
                       help="seconds to wait for each JSON-RPC answer [default: 10]")

    def wallet_options(p, secret=True):
        p.add_argument("--wallet", metavar="PATH", help="the wallet file (default: $ORB_WALLET, else "
                                                        "$ORB_HOME/wallet.json)")
        if secret:
            p.add_argument("--passphrase-file", metavar="FILE", help="the passphrase of an encrypted wallet "
                                                                     "(its first line)")

    def verb(parser_sub, name, help_text, func):
        p = parser_sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.set_defaults(func=_guarded(func))
        return p

    w = sub.add_parser("wallet", help="the Ethereum wallet that pays and is paid",
                       description="The Ethereum wallet that funds functions and receives hosts' pay.",
                       epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    wsub = w.add_subparsers(dest="wallet_command", metavar="VERB", parser_class=sub._parser_class)

    p = verb(wsub, "new", "make a wallet key (mode 0600; a keystore when a passphrase is given)", wallet_new)
    wallet_options(p)
    p = verb(wsub, "show", "print the wallet's address", wallet_show)
    wallet_options(p, secret=False)
    p = verb(wsub, "balance", "the wallet's ether on the chain, and any escrow credit", wallet_balance)
    wallet_options(p, secret=False)
    chain_options(p)
    p = verb(wsub, "claim", "submit the latest vouchers of the voucher book in one claimBatch", wallet_claim)
    wallet_options(p)
    chain_options(p)
    p.add_argument("--book", metavar="PATH", help="the voucher book (default: $ORB_HOME/vouchers.sqlite)")
    p.add_argument("--voucher", metavar="FILE", action="append", default=[],
                   help="add this voucher (canonical JSON) to the book first (repeatable)")
    p.add_argument("--max", type=int, default=50, metavar="N", help="most vouchers in the batch [default: 50]")
    p = verb(wsub, "withdraw", "an owner's unspent funds: request the withdrawal, then after the delay withdraw",
             wallet_withdraw)
    p.add_argument("fid", metavar="FID")
    wallet_options(p)
    chain_options(p)

    p = verb(wsub, "pay", "as a caller the function's owner accepts as a voucher signer (orb fund --signer): add "
                          "the requests a host served you to this wallet's tally for it, and sign a fresh cumulative "
                          "voucher the host claims with `orb wallet claim --voucher FILE`", wallet_pay)
    p.add_argument("fid", metavar="FID")
    p.add_argument("--host", required=True, metavar="ADDR", help="the host's payout address")
    p.add_argument("--requests", type=int, default=0, metavar="N", help="requests it served you since the last one")
    p.add_argument("--bytes", type=int, default=0, metavar="N", help="bytes it transferred for you since then")
    p.add_argument("--epochs", type=int, default=0, metavar="N", help="uptime epochs to pay it for since then")
    p.add_argument("--expires", type=int, default=7 * 86400, metavar="SECONDS",
                   help="the voucher's lifetime [default: 604800, 7 days]")
    p.add_argument("--out", metavar="FILE", help="write the voucher (canonical JSON) there, not to stdout")
    p.add_argument("--tally", metavar="PATH", help="this wallet's running counters (default: "
                                                   "$ORB_HOME/payer-tally.sqlite, mode 0600)")
    wallet_options(p)
    chain_options(p)

    p = verb(sub, "fund", "fund a function on the escrow (its first funder becomes its owner)", fund)
    p.add_argument("fid", metavar="FID")
    p.add_argument("--eth", required=True, metavar="ETH", help="ether to deposit, e.g. 0.1")
    p.add_argument("--price-wei", required=True, type=int, metavar="N", help="wei per request served")
    p.add_argument("--epoch-price-wei", type=int, default=0, metavar="N", help="wei per uptime epoch")
    p.add_argument("--mib-price-wei", type=int, default=0, metavar="N", help="wei per MiB transferred")
    p.add_argument("--signer", action="append", default=[], metavar="ADDR",
                   help="a voucher signer to accept: a tracker's or an authorized caller's address (repeatable)")
    wallet_options(p)
    chain_options(p)


def _guarded(func):
    def run(args):
        try:
            return func(args)
        except _wallet.WalletExists as e:
            raise CommandError(str(e), _ui.EXIT_EXISTS, "exists") from None
        except (_wallet.PassphraseRequired, _wallet.BadPassphrase) as e:
            raise CommandError(str(e), EXIT_PASSPHRASE, "passphrase") from None
        except _wallet.WalletError as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "wallet") from None
        except _client.ChainUnreachable as e:
            raise CommandError(str(e), EXIT_NO_CHAIN, "chain") from None
        except _client.NoEscrow as e:
            raise CommandError(str(e), EXIT_NO_CHAIN, "escrow") from None
        except _config.ConfigError as e:
            raise CommandError(str(e), _ui.EXIT_INPUT, "config") from None

    return run


# --- shared -----------------------------------------------------------------------------------


def _wallet_path(args):
    return os.path.abspath(args.wallet or os.environ.get("ORB_WALLET")
                           or _wallet.default_path(_config.orb_home()))


def _passphrase(args):
    return _wallet.read_passphrase_file(args.passphrase_file) if getattr(args, "passphrase_file", None) else None


def _account(args):
    return _wallet.load(_wallet_path(args), _passphrase(args))


def _web3(args):
    return _client.connect(args.eth_rpc, timeout_s=args.timeout)


def _escrow(args, w3):
    from eth_utils import is_address, to_checksum_address

    from orb.pay import contract

    if args.escrow:
        if not is_address(args.escrow):
            raise CommandError(f"--escrow {args.escrow!r:.60} is not an address", _ui.EXIT_USAGE, "usage")
        address = to_checksum_address(args.escrow)
    else:
        address = _client.escrow_address(args.eth_rpc, timeout_s=args.timeout)
    if not w3.eth.get_code(address):
        raise CommandError(f"there is no contract at {address} on chain {w3.eth.chain_id}: wrong --escrow or "
                           "--eth-rpc?", EXIT_NO_CHAIN, "escrow")
    return contract.Escrow(w3, address)


def _eth_text(wei):
    text = f"{decimal.Decimal(wei) / WEI_PER_ETH:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _error_args(args):
    return "(" + ", ".join("0x" + bytes(a).hex() if isinstance(a, (bytes, bytearray)) else str(a)
                           for a in args) + ")"


def _parse_eth(text):
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise CommandError(f"--eth {text!r:.40} is not a number of ether (e.g. 0.1)", _ui.EXIT_USAGE, "usage") from None
    wei = value * WEI_PER_ETH
    if not value.is_finite() or value < 0 or wei != wei.to_integral_value() or wei >= 2**128:
        raise CommandError(f"--eth {text!r:.40} is not a whole number of wei from 0 to 2**128", _ui.EXIT_USAGE,
                           "usage")
    return int(wei)


def _contract_error(e, fid_text=""):
    """An EscrowError (a named custom error) or a node's refusal as a CommandError."""
    from orb.pay import contract

    if isinstance(e, contract.EscrowError):
        name = e.name or "revert"
        if name == "Unfunded":
            return CommandError(f"the function {fid_text} is not funded on this escrow: `orb fund {fid_text} ...` "
                                "first", EXIT_UNFUNDED, "unfunded")
        hints = {
            "NotOwner": "only the fid's owner (its first funder) may do this",
            "PriceDecrease": "an owner may raise prices, never lower them",
            "WithdrawalTooEarly": "the withdrawal delay has not passed yet",
            "WithdrawalNotRequested": "no withdrawal was requested",
        }
        return CommandError(f"the escrow refused: {name}{_error_args(e.error_args) if e.error_args else ''}"
                            + (f" ({hints[name]})" if name in hints else ""), EXIT_REFUSED_BY_ESCROW, "refused",
                            {"contract_error": name})
    text = str(e)
    if "insufficient funds" in text.lower():
        return CommandError(f"the wallet cannot pay for this transaction: {text[:200]}", EXIT_FUNDS, "funds")
    return None


def _transact(fn, fid_text=""):
    """Run an escrow transaction, turning its refusals into CommandErrors."""
    import requests

    try:
        return fn()
    except requests.RequestException as e:
        raise CommandError(f"the chain stopped answering ({type(e).__name__})", EXIT_NO_CHAIN, "chain") from None
    except Exception as e:
        mapped = _contract_error(e, fid_text)
        if mapped is None:
            raise
        raise mapped from None


def _check_can_pay(w3, address, value_wei, gas_hint=300_000):
    balance = w3.eth.get_balance(address)
    need = value_wei + gas_hint * w3.eth.gas_price
    if balance < need:
        raise CommandError(f"the wallet {address} has {_eth_text(balance)} ETH; this needs about {_eth_text(need)} "
                           "ETH (value + gas)", EXIT_FUNDS, "funds",
                           {"balance_wei": str(balance), "needed_wei": str(need)})
    return balance


def _receipt_doc(receipt):
    return {"tx": "0x" + bytes(receipt["transactionHash"]).hex(), "block": receipt["blockNumber"],
            "gas_used": receipt["gasUsed"], "fee_wei": str(receipt["gasUsed"] * receipt.get("effectiveGasPrice", 0))}


# --- verbs -------------------------------------------------------------------------------------


def wallet_new(args):
    path = _wallet_path(args)
    account = _wallet.create(path, _passphrase(args))
    doc = {"ok": True, "address": account.address, "path": path, "encrypted": args.passphrase_file is not None}
    _ui.emit(args, doc, lambda c: c.print(
        f"{account.address}\n  wallet written to {path} (mode 0600"
        + (", encrypted" if doc["encrypted"] else ", not encrypted: pass --passphrase-file to encrypt") + ")"))
    return _ui.EXIT_OK


def wallet_show(args):
    doc = {"ok": True, **_wallet.info(_wallet_path(args))}
    _ui.emit(args, doc, lambda c: c.print(doc["address"]))
    return _ui.EXIT_OK


def wallet_balance(args):
    info = _wallet.info(_wallet_path(args))
    w3 = _web3(args)
    balance = w3.eth.get_balance(info["address"])
    doc = {"ok": True, "address": info["address"], "chain_id": w3.eth.chain_id, "balance_wei": str(balance),
           "balance_eth": _eth_text(balance)}
    try:
        escrow = _escrow(args, w3)
    except (CommandError, _client.NoEscrow):
        escrow = None
    if escrow is not None:
        doc["escrow"] = escrow.address
        doc["escrow_credit_wei"] = str(escrow.credit(info["address"]))
    _ui.emit(args, doc, lambda c: c.print(f"{doc['balance_eth']} ETH  ({info['address']} on chain {doc['chain_id']})"))
    return _ui.EXIT_OK


def wallet_claim(args):
    if not 1 <= args.max <= 200:
        raise CommandError("--max takes 1 to 200 vouchers", _ui.EXIT_USAGE, "usage")
    account = _account(args)
    w3 = _web3(args)
    escrow = _escrow(args, w3)
    domain = _voucher.Domain(chain_id=w3.eth.chain_id, contract=escrow.address)
    book_path = os.path.abspath(args.book or os.path.join(_config.orb_home(), VOUCHER_BOOK_NAME))
    book = _book.VoucherBook(book_path)
    try:
        added = 0
        for path in args.voucher:
            try:
                with open(path, "rb") as f:
                    signed = _voucher.SignedVoucher.from_json(f.read(_voucher.MAX_JSON_BYTES + 1))
                added += bool(book.add(signed))
            except OSError as e:
                raise CommandError(f"cannot read the voucher {path}: {e.strerror}", _ui.EXIT_INPUT, "voucher") from None
            except _voucher.VoucherError as e:
                raise CommandError(f"the voucher {path} is refused: {e}", _ui.EXIT_INPUT, "voucher") from None
        entries = book.claimable(domain=domain, limit=args.max)
        # A voucher of an unfunded fid would only be skipped on chain: leave it out, say so.
        funded, unfunded = [], []
        fund_of = {}
        for e in entries:
            fid = e.signed.voucher.fid
            if fid not in fund_of:
                fund_of[fid] = escrow.funds(fid).funded
            (funded if fund_of[fid] else unfunded).append(e)
        base = {"ok": True, "book": book_path, "added": added, "escrow": escrow.address,
                "unfunded": [_fid.to_text(_voucher.fid_from_bytes32(e.signed.voucher.fid)) for e in unfunded]}
        if not funded:
            if unfunded:
                raise CommandError(f"every claimable voucher is for an unfunded fid ({len(unfunded)}): nothing "
                                   "to claim", EXIT_UNFUNDED, "unfunded", base)
            doc = {**base, "claimed": 0, "paid_wei": "0"}
            _ui.emit(args, doc, lambda c: c.print("nothing to claim: no voucher grew since the last claim"))
            return _ui.EXIT_OK
        _check_can_pay(w3, account.address, 0)
        vouchers = [e.signed.voucher for e in funded]
        receipt = _transact(lambda: escrow.claim_batch(account, vouchers, [e.signed.signature for e in funded]))
        events = escrow.events(receipt)
        paid = sum(ev["amount"] for name, ev in events if name == "Claimed")
        skipped = [{"index": ev["index"], "reason": "0x" + bytes(ev["reason"]).hex()}
                   for name, ev in events if name == "ClaimSkipped"]
        skipped_idx = {s["index"] for s in skipped}
        book.mark_claimed([e.signed for i, e in enumerate(funded) if i not in skipped_idx],
                          "0x" + bytes(receipt["transactionHash"]).hex())
    finally:
        book.close()
    doc = {**base, **_receipt_doc(receipt), "claimed": len(funded) - len(skipped), "skipped": skipped,
           "paid_wei": str(paid), "paid_eth": _eth_text(paid)}
    _ui.emit(args, doc, lambda c: c.print(
        f"claimed {doc['claimed']} voucher(s): {doc['paid_eth']} ETH paid to the host(s), gas {doc['gas_used']}"
        + (f"; {len(skipped)} skipped by the escrow" if skipped else "")))
    return _ui.EXIT_OK


PAYER_TALLY_NAME = "payer-tally.sqlite"
MAX_PAY_STEP = 2**63  # one `orb wallet pay` adds at most this to a counter (the counters are uint64)


def wallet_pay(args):
    from eth_utils import is_address, to_checksum_address

    from orb.pay.tally import Tally

    raw_fid = _ui.fid_argument(args.fid)
    if not is_address(args.host):
        raise CommandError(f"--host {args.host!r:.60} is not an address", _ui.EXIT_USAGE, "usage")
    host = to_checksum_address(args.host)
    steps = (args.requests, args.bytes, args.epochs)
    if any(not 0 <= n < MAX_PAY_STEP for n in steps) or not any(steps):
        raise CommandError("give --requests, --bytes or --epochs: whole numbers from 0 to 2**63, not all 0",
                           _ui.EXIT_USAGE, "usage")
    if not 60 <= args.expires <= 366 * 86400:
        raise CommandError("--expires takes 60 to 31622400 seconds", _ui.EXIT_USAGE, "usage")
    account = _account(args)
    w3 = _web3(args)
    escrow = _escrow(args, w3)
    fid32 = raw_fid[1:]
    if not escrow.funds(fid32).funded:
        raise CommandError(f"{args.fid} is not funded on escrow {escrow.address}: a voucher for it pays nothing",
                           EXIT_UNFUNDED, "unfunded")
    if not escrow.is_signer(fid32, account.address):
        raise CommandError(f"the owner of {args.fid} does not accept {account.address} as a voucher signer, so the "
                           f"escrow would refuse this voucher: the owner runs `orb fund {args.fid} --signer "
                           f"{account.address} ...`", EXIT_REFUSED_BY_ESCROW, "not_a_signer")
    domain = _voucher.Domain(chain_id=w3.eth.chain_id, contract=escrow.address)
    path = os.path.abspath(args.tally or os.path.join(_config.orb_home(), PAYER_TALLY_NAME))
    tally = Tally(path, bytes(account.key), domain, expiry_s=args.expires)
    try:
        tally.add(fid32, host, *steps)
        signed = tally.sign(fid32, host)  # durable before it is signed: a restart never signs lower counters
    finally:
        tally.close()
    text = signed.to_json()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    v = signed.voucher
    doc = {"ok": True, "fid": args.fid, "host": host, "signer": account.address, "requests": v.requests,
           "bytes": v.bytes, "epochs": v.epochs, "expiry": v.expiry, "tally": path, "out": args.out,
           "voucher": signed.to_dict()}

    def human(c):
        if not args.out:
            sys.stdout.write(text + "\n")
            return
        c.print(f"voucher for {host}: {v.requests} requests, {v.bytes} bytes, {v.epochs} epochs in all, signed by "
                f"{account.address}; written to {args.out} (the host claims it with `orb wallet claim --voucher "
                f"{os.path.basename(args.out)}`)", markup=False)

    _ui.emit(args, doc, human)
    return _ui.EXIT_OK


def wallet_withdraw(args):
    raw_fid = _ui.fid_argument(args.fid)
    account = _account(args)
    w3 = _web3(args)
    escrow = _escrow(args, w3)
    info = escrow.funds(raw_fid)
    if not info.funded:
        raise CommandError(f"the function {args.fid} is not funded on this escrow: nothing to withdraw",
                           EXIT_UNFUNDED, "unfunded")
    if info.owner != account.address:
        raise CommandError(f"the function {args.fid} is owned by {info.owner}, not this wallet {account.address}",
                           EXIT_REFUSED_BY_ESCROW, "refused")
    _check_can_pay(w3, account.address, 0)
    now = w3.eth.get_block("latest")["timestamp"]
    if info.withdrawable_at == 0:
        receipt = _transact(lambda: escrow.request_withdrawal(account, raw_fid), args.fid)
        at = escrow.funds(raw_fid).withdrawable_at
        doc = {"ok": True, "action": "requested", "fid": args.fid, "withdrawable_at": at,
               "balance_wei": str(info.balance_wei), **_receipt_doc(receipt)}
        human = f"withdrawal requested: run `orb wallet withdraw {args.fid}` again after {at} (unix time)"
    elif now < info.withdrawable_at:
        raise CommandError(f"the withdrawal delay runs until {info.withdrawable_at} (chain time now {now}): "
                           "try again then", EXIT_REFUSED_BY_ESCROW, "too_early",
                           {"withdrawable_at": info.withdrawable_at})
    else:
        receipt = _transact(lambda: escrow.withdraw(account, raw_fid), args.fid)
        amount = sum(ev["amount"] for name, ev in escrow.events(receipt) if name == "Withdrawn")
        doc = {"ok": True, "action": "withdrawn", "fid": args.fid, "amount_wei": str(amount),
               "amount_eth": _eth_text(amount), **_receipt_doc(receipt)}
        human = f"withdrew {doc['amount_eth']} ETH to {account.address}; the function is no longer funded"
    _ui.emit(args, doc, lambda c: c.print(human))
    return _ui.EXIT_OK


def check_fund_options(args):
    """The deposit in wei and the checksummed signers of `orb fund`'s options (shared with `orb deploy --fund`),
    checked before anything touches the chain."""
    from eth_utils import is_address, to_checksum_address

    value = _parse_eth(args.eth)
    for name in ("price_wei", "epoch_price_wei", "mib_price_wei"):
        if not 0 <= getattr(args, name) < 2**128:
            raise CommandError(f"--{name.replace('_', '-')} takes 0 to 2**128 - 1 wei", _ui.EXIT_USAGE, "usage")
    if len(args.signer) > MAX_SIGNERS:
        raise CommandError(f"at most {MAX_SIGNERS} --signer at a time", _ui.EXIT_USAGE, "usage")
    for s in args.signer:
        if not is_address(s):
            raise CommandError(f"--signer {s!r:.60} is not an Ethereum address", _ui.EXIT_USAGE, "usage")
    signers = []
    for s in map(to_checksum_address, args.signer):
        if s not in signers:
            signers.append(s)
    return value, signers


def fund_fid(args):
    """Fund ``args.fid`` on the escrow from the wallet: the result document of `orb fund` (raises CommandError)."""
    raw_fid = _ui.fid_argument(args.fid)
    value, signers = check_fund_options(args)
    account = _account(args)
    w3 = _web3(args)
    escrow = _escrow(args, w3)
    _check_can_pay(w3, account.address, value)
    receipt = _transact(lambda: escrow.fund(account, raw_fid, value_wei=value, price_per_request_wei=args.price_wei,
                                            price_per_epoch_wei=args.epoch_price_wei,
                                            price_per_mib_wei=args.mib_price_wei, signers=signers), args.fid)
    info = escrow.funds(raw_fid)
    return {"ok": True, "fid": args.fid, "escrow": escrow.address, "owner": info.owner,
            "deposit_wei": str(value), "deposit_eth": _eth_text(value),
            "balance_wei": str(info.balance_wei), "balance_eth": _eth_text(info.balance_wei),
            "price_per_request_wei": str(info.price_per_request_wei),
            "price_per_epoch_wei": str(info.price_per_epoch_wei), "price_per_mib_wei": str(info.price_per_mib_wei),
            "signers": signers, **_receipt_doc(receipt)}


def fund(args):
    doc = fund_fid(args)
    _ui.emit(args, doc, lambda c: c.print(f"funded {args.fid}: {doc['balance_eth']} ETH on the escrow, "
                                          f"{doc['price_per_request_wei']} wei a request"))
    return _ui.EXIT_OK


def funding_of(args, raw_fid):
    """What the escrow says of a fid, for `orb info`: None when it is not funded (raises on a chain failure).

    Balance, prices and paid totals are read at one block. A failed read of the paid totals (a node that
    refuses eth_getLogs, say) leaves the rest and says so in ``paid_warning``."""
    w3 = _web3(args)
    escrow = _escrow(args, w3)
    block = w3.eth.block_number
    info = escrow.funds(raw_fid, block=block)
    if not info.funded:
        return None
    doc = {"escrow": escrow.address, "chain_id": w3.eth.chain_id, "block": block, "owner": info.owner,
           "balance_wei": str(info.balance_wei), "balance_eth": _eth_text(info.balance_wei),
           "price_per_request_wei": str(info.price_per_request_wei),
           "price_per_epoch_wei": str(info.price_per_epoch_wei), "price_per_mib_wei": str(info.price_per_mib_wei),
           "withdrawable_at": info.withdrawable_at}
    try:
        doc["paid"] = paid_doc(escrow.claims(raw_fid, to_block=block))
    except Exception as e:  # the balance is still worth showing
        doc["paid_warning"] = f"the paid totals could not be read: {type(e).__name__}: {str(e)[:200]}"
    return doc


def paid_doc(scan):
    """The ``paid`` document of `orb info --json` from a ClaimScan (see PAID_JSON_HELP)."""
    from orb.pay import contract

    hosts = contract.paid_by_host(scan.claims)
    total = sum(c.amount_wei for c in scan.claims)
    return {"total_wei": str(total), "total_eth": _eth_text(total), "claims": len(scan.claims),
            "requests": sum(h.requests for h in hosts),
            "hosts": [{"host": h.host, "requests": h.requests, "bytes": h.bytes, "epochs": h.epochs,
                       "amount_wei": str(h.amount_wei), "amount_eth": _eth_text(h.amount_wei), "claims": h.claims,
                       "last_claim_block": h.last_block} for h in hosts],
            "from_block": scan.from_block, "to_block": scan.to_block, "truncated": scan.truncated,
            "underpaid_wei": str(sum(u.unpaid_wei for u in scan.underpaid)), "underpaid_claims": len(scan.underpaid)}


PAID_JSON_HELP = (
    'With --eth-rpc, --json has "funding": the escrow\'s view of the function at block "block" (its "balance_wei", '
    '"price_per_request_wei", "owner"...), or {"funded": false}, or instead "funding_warning" when the chain did '
    'not answer. "funding.paid" totals the escrow\'s Claimed events for the function from "from_block" to '
    '"to_block": "total_wei" paid in "claims" claims for "requests" requests, and "hosts", most paid first, each '
    'with "host", "requests", "bytes" and "epochs" paid (the latest cumulative counters of each signer\'s vouchers, '
    'summed over signers), "amount_wei" received, "claims" and "last_claim_block". "truncated": true when the scan '
    'stopped at its cap of claims ("to_block" is then the last block counted). "underpaid_wei" is what '
    '"underpaid_claims" claims were owed beyond the balance (the escrow\'s Underpaid events: the deposit ran out; '
    'those requests are settled unpaid). A "paid_warning" replaces "paid" when the claims could not be read.')
