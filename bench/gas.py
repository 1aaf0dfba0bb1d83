"""
Payments (issue 14): what OrbEscrow's claims cost in gas, beside the
per-receipt alternative measured in the same run.

Everything runs on an in-process chain (web3's EthereumTesterProvider:
eth-tester on py-evm, the embedded default chain), with the committed
artifacts (contracts/build/*.json, solc pinned in contracts/package.json,
shanghai, optimizer 200 runs). Gas is the receipt's ``gasUsed``: exact and
deterministic, unlike time, so these figures do not depend on the machine.

Measures:

1. ``deploy``: OrbEscrow's and PerReceiptBaseline's deployment gas.
2. ``claim``: one ``claim`` covering 1, 100 and 10,000 requests, each on a new
   (fid, host, signer) channel (the first claim writes a fresh storage slot:
   the worst case) and again on the same channel (a later voucher: the steady
   case). The host submits its own claim, as hosts do.
3. ``batch``: ``claimBatch`` of 1, 10 and 50 vouchers for one host (distinct
   (fid, signer) pairs: 5 fids x 10 signers), each voucher covering 10,000
   requests: gas per transaction, per voucher and per paid request, first
   round (new channels) and second round (steady).
4. ``baseline``: PerReceiptBaseline.claimReceipts, the per-receipt design:
   one signed receipt per request, one ecrecover and one storage write
   (spent-receipt flag) each, for 1 and 100 receipts per transaction, then
   up to ``--baseline-requests`` in all (default 10,000; 0 with ``--quick``)
   in transactions of 100: 10,000 receipts do not fit one 30M-gas block
   (about 28k gas each), so they take 100 transactions (about 90 s here).
   Its per-request gas, the one the target compares with, is the marginal
   cost ((gas(100) - gas(1)) / 99): it leaves the 21,000-gas transaction
   base out and so favours the baseline. When 10,000 are not run they are
   extrapolated linearly, and the output says so.

Target (issue 14), printed with a check mark: gas per paid request at
10,000 requests per claim <= 1% of the baseline's per-request gas.

    .venv/bin/python bench/gas.py [--quick] [--baseline-requests N] [--out bench/out]

``--quick`` skips the 50-voucher batch, the steady rounds and the 10,000-receipt
baseline run (extrapolated instead). Writes
``gas.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from eth_account import Account  # noqa: E402
from eth_keys import keys  # noqa: E402
from web3 import EthereumTesterProvider, Web3  # noqa: E402

from orb.pay.contract import Voucher, deploy_escrow, load_artifact  # noqa: E402

TARGET_RATIO = 0.01
PRICE_WEI = 10**9
MAX_RECEIPTS_PER_TX = 100


def sign_voucher(escrow, key, voucher):
    return Account.sign_typed_data(key, full_message=escrow.typed_data(voucher)).signature


class Bench:
    def __init__(self):
        self.w3 = Web3(EthereumTesterProvider())
        accounts = self.w3.eth.accounts
        self.deployer, self.owner, self.host = accounts[:3]
        self.escrow = deploy_escrow(self.w3, self.deployer, 86_400)
        self.signers = [Account.create() for _ in range(10)]
        self.fids = [bytes([i + 1]) * 32 for i in range(10)]
        for fid in self.fids:
            self.escrow.fund(self.owner, fid, value_wei=10**22, price_per_request_wei=PRICE_WEI,
                             signers=[s.address for s in self.signers])
        art = load_artifact("PerReceiptBaseline")
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor().transact({"from": self.deployer})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        self.baseline_deploy_gas = receipt["gasUsed"]
        self.baseline = self.w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])
        self.receipt_key = keys.PrivateKey(b"\x07" * 32)
        self.receipt_serial = 0
        self.counters = {}

    def expiry(self):
        return self.w3.eth.get_block("pending")["timestamp"] + 86_400

    def voucher(self, fid, signer, add_requests):
        key = (fid, signer.address)
        self.counters[key] = self.counters.get(key, 0) + add_requests
        v = Voucher(fid=fid, host=self.host, signer=signer.address, requests=self.counters[key],
                    expiry=self.expiry())
        return v, sign_voucher(self.escrow, signer.key, v)

    def claim_gas(self, fid, signer, requests):
        v, sig = self.voucher(fid, signer, requests)
        r = self.escrow.claim(self.host, v, sig)
        return r["gasUsed"]

    def batch_gas(self, pairs, requests):
        signed = [self.voucher(fid, s, requests) for fid, s in pairs]
        r = self.escrow.claim_batch(self.host, [v for v, _ in signed], [s for _, s in signed])
        claimed = sum(1 for name, _ in self.escrow.events(r) if name == "Claimed")
        if claimed != len(pairs):
            raise RuntimeError(f"batch paid {claimed} of {len(pairs)} vouchers")
        return r["gasUsed"]

    def baseline_gas(self, n):
        """One claimReceipts transaction of n fresh receipts."""
        digests, vs, rs, ss = [], [], [], []
        for _ in range(n):
            self.receipt_serial += 1
            d = Web3.keccak(b"orb-receipt" + self.receipt_serial.to_bytes(8, "big"))
            sig = self.receipt_key.sign_msg_hash(d)
            digests.append(bytes(d))
            vs.append(sig.v + 27)
            rs.append(sig.r.to_bytes(32, "big"))
            ss.append(sig.s.to_bytes(32, "big"))
        fn = self.baseline.functions.claimReceipts(self.host, self.receipt_key.public_key.to_checksum_address(),
                                                   digests, vs, rs, ss)
        tx = fn.transact({"from": self.host, "gas": 29_000_000})
        r = self.w3.eth.wait_for_transaction_receipt(tx)
        if r["status"] != 1:
            raise RuntimeError("baseline claim reverted")
        return r["gasUsed"]


def run(args):
    t0 = time.monotonic()
    b = Bench()
    out = {"chain": "eth-tester/py-evm (in process)", "price_wei": PRICE_WEI}
    art = b.escrow.artifact
    out["deploy"] = {
        "OrbEscrow": b.escrow.deploy_receipt["gasUsed"],
        "OrbEscrow_runtime_bytes": (len(art["deployedBytecode"]) - 2) // 2,
        "PerReceiptBaseline": b.baseline_deploy_gas,
        "solc": art["solcVersion"], "evm": art["evmVersion"],
    }
    print(f"solc {art['solcVersion']}, evm {art['evmVersion']}, chain {out['chain']}")
    print(f"deploy: OrbEscrow {out['deploy']['OrbEscrow']:,} gas "
          f"({out['deploy']['OrbEscrow_runtime_bytes']:,} bytes of runtime code); "
          f"PerReceiptBaseline {b.baseline_deploy_gas:,} gas")

    # 2. One voucher per claim.
    claims = []
    print("\nclaim: one voucher per transaction (host submits)")
    print(f"  {'requests':>9} {'first claim':>12} {'per request':>12} {'steady':>9} {'per request':>12}")
    for i, n in enumerate((1, 100, 10_000)):
        fid, signer = b.fids[i], b.signers[0]
        first = b.claim_gas(fid, signer, n)
        steady = None if args.quick else b.claim_gas(fid, signer, n)
        claims.append({"requests": n, "first_gas": first, "steady_gas": steady})
        print(f"  {n:>9,} {first:>12,} {first / n:>12,.2f} "
              + (f"{steady:>9,} {steady / n:>12,.2f}" if steady else f"{'-':>9} {'-':>12}"))
    out["claim"] = claims

    # 3. Batches: distinct (fid, signer) pairs, one host.
    batches = []
    sizes = (1, 10) if args.quick else (1, 10, 50)
    per_voucher = 10_000
    print(f"\nbatch: claimBatch, one host, distinct (fid, signer) vouchers of {per_voucher:,} requests each")
    print(f"  {'vouchers':>9} {'round':>7} {'gas':>11} {'per voucher':>12} {'per request':>12}")
    fid_offset = 3  # fids 0-2 served the single claims: every batch's first round is on new channels
    for size in sizes:
        pairs = [(b.fids[fid_offset + k // 10], b.signers[k % 10]) for k in range(size)]
        fid_offset += -(-size // 10)
        rounds = ("first",) if args.quick else ("first", "steady")
        for name in rounds:
            gas = b.batch_gas(pairs, per_voucher)
            row = {"vouchers": size, "round": name, "gas": gas, "gas_per_voucher": gas / size,
                   "gas_per_request": gas / (size * per_voucher)}
            batches.append(row)
            print(f"  {size:>9} {name:>7} {gas:>11,} {gas / size:>12,.0f} {row['gas_per_request']:>12,.3f}")
    out["batch"] = batches

    # 4. The per-receipt baseline, in the same run.
    print("\nbaseline: per-receipt claims (one ecrecover + one storage write per request)")
    g1 = b.baseline_gas(1)
    g100 = b.baseline_gas(MAX_RECEIPTS_PER_TX)
    marginal = (g100 - g1) / (MAX_RECEIPTS_PER_TX - 1)
    base = {"gas_1": g1, "gas_100": g100, "per_request_marginal": marginal, "per_request_at_100": g100 / 100}
    print(f"  1 receipt: {g1:,} gas; 100 receipts: {g100:,} gas ({g100 / 100:,.0f} a receipt); "
          f"marginal {marginal:,.0f} gas a receipt")
    extra = max(0, args.baseline_requests - MAX_RECEIPTS_PER_TX - 1)
    if extra:
        t = time.monotonic()
        total, done = g1 + g100, 1 + MAX_RECEIPTS_PER_TX
        while done < args.baseline_requests:
            n = min(MAX_RECEIPTS_PER_TX, args.baseline_requests - done)
            total += b.baseline_gas(n)
            done += n
        base.update({"measured_requests": done, "measured_gas": total, "measured_per_request": total / done,
                     "measured_s": round(time.monotonic() - t, 1)})
        print(f"  {done:,} receipts measured in {-(-done // MAX_RECEIPTS_PER_TX)} transactions: {total:,} gas "
              f"({total / done:,.0f} a receipt, {base['measured_s']} s)")
    else:
        base["extrapolated_10000"] = round(g1 + 9_999 * marginal)
        print(f"  10,000 receipts: {base['extrapolated_10000']:,} gas, EXTRAPOLATED linearly from the 1 and 100 "
              f"measures (not run: about {base['extrapolated_10000'] / 30e6:.0f} blocks of 30M gas; "
              f"the full run measures it)")
    out["baseline"] = base

    # The target.
    at_10k = claims[2]["first_gas"] / 10_000
    ratio = at_10k / marginal
    best_batch = min((r for r in batches if r["round"] == "first"), key=lambda r: r["gas_per_request"])
    ok = ratio <= TARGET_RATIO
    out["target"] = {"gas_per_request_at_10000": at_10k, "baseline_per_request": marginal, "ratio": ratio,
                     "target_ratio": TARGET_RATIO, "met": ok,
                     "best_batch_gas_per_request": best_batch["gas_per_request"],
                     "best_batch_ratio": best_batch["gas_per_request"] / marginal}
    mark = "\u2713" if ok else "\u2717"
    print(f"\n{mark} gas per paid request at 10,000 requests per claim: {at_10k:,.2f} (first claim on a channel) "
          f"vs {marginal:,.0f} per receipt: {ratio:.4%} of the baseline (target <= {TARGET_RATIO:.0%})")
    print(f"  batch of {best_batch['vouchers']} x 10,000 requests: {best_batch['gas_per_request']:,.3f} gas a request, "
          f"{out['target']['best_batch_ratio']:.4%} of the baseline")
    out["wall_s"] = round(time.monotonic() - t0, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gas.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"\nwrote {path} ({out['wall_s']} s)")
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: batches of 1 and 10, no steady rounds")
    parser.add_argument("--baseline-requests", type=int,
                        help="run the baseline for this many receipts in all, in transactions of 100 "
                             "(default 10000; --quick 0: 1 and 100 only, 10,000 extrapolated)")
    parser.add_argument("--out", default=os.path.join(HERE, "out"), help="output dir (default bench/out)")
    args = parser.parse_args(argv)
    if args.baseline_requests is None:
        args.baseline_requests = 0 if args.quick else 10_000
    if not 0 <= args.baseline_requests <= 100_000:
        parser.error("--baseline-requests: 0 to 100000")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
