"""
Capability token checks per second on one core (issue 13), against a bare Ed25519 verification
(``cryptography``, what orb.identity uses) measured in the same run.

    .venv/bin/python bench/tokens.py [--seconds 3] [--revocations 10000] [--quick] [--json]

Each check is the tracker's whole ``Tokens.check`` (orb.tracker.tokens): decode, every signature,
the chain rules, expiry, scope, a revocation look-up per link (issuer and owner) in a registry
holding ``--revocations`` revocation records, and the caller binding. Rows: a bare verification of
a token-sized message, a root token (one link), a 2-link delegated token, and the same 2-link token
revoked (refused at the revocation step, after both verifications). The ratio column is checks per
second over bare verifications per second: 1.0 would be a check that costs one verification.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from orb.identity import NodeKey  # noqa: E402
from orb.protocol import fid as fidmod  # noqa: E402
from orb.protocol import messages as m  # noqa: E402
from orb.protocol import token as t  # noqa: E402
from orb.protocol.deploy import sign_deploy  # noqa: E402
from orb.protocol.federation import FunctionRecord, Revocation  # noqa: E402
from orb.protocol.manifest import canonical_bytes, from_toml  # noqa: E402
from orb.protocol.token import TokenError  # noqa: E402
from orb.tracker.registry import Registry  # noqa: E402
from orb.tracker.tokens import Tokens  # noqa: E402

T0 = 1_764_000_000
TOML = '''name = "bench"
version = "1.0.0"
runtime = "python"
entry = "main.py"
visibility = "private"

[[sample]]
input = "x"
output = "x"
'''


def rate(fn, seconds):
    """Calls of fn per second, best of 3 runs of ``seconds / 3``."""
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(16):
                fn()
            n += 16
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def setup(revocations):
    clock = Clock()
    clock.advance(T0)
    owner, alice, bob = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    registry = Registry(clock, NodeKey.generate())
    fid_raw = fidmod.fid_for(b"bench private function")
    fid = fidmod.to_text(fid_raw)
    manifest = canonical_bytes(from_toml(TOML))
    registry.upsert_function(FunctionRecord(fid, owner.public_bytes, manifest, 100, 1,
                                            sign_deploy(owner, fid_raw, manifest, 100, 1)))
    for i in range(revocations):  # other tokens' revocations: the table the look-ups search
        token_id = i.to_bytes(16, "big")
        message = m.Revoke(issuer_key=owner.public_bytes, token_id=token_id, not_after=T0 + 86400, signature=bytes(64))
        registry.accept(Revocation(owner.public_bytes, token_id, T0 + 86400, owner.sign(message.signed_bytes())))
    tokens = Tokens(clock, registry)
    root = t.issue(owner, owner.public_bytes, t.SCOPE_FID, fid_raw, alice.public_bytes, T0 + 3600, delegable=True)
    child = t.delegate(root, alice, t.SCOPE_FID, fid_raw, bob.public_bytes, T0 + 600)
    revoked = t.delegate(root, alice, t.SCOPE_FID, fid_raw, bob.public_bytes, T0 + 601)
    message = m.Revoke(issuer_key=alice.public_bytes, token_id=revoked.id, not_after=T0 + 601, signature=bytes(64))
    tokens.revoke(m.Revoke(issuer_key=alice.public_bytes, token_id=revoked.id, not_after=T0 + 601,
                           signature=alice.sign(message.signed_bytes())))
    return tokens, fid, alice, bob, root, child, revoked


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row (default 3)")
    parser.add_argument("--revocations", type=int, default=10_000, help="revocations held (default 10000)")
    parser.add_argument("--quick", action="store_true", help="0.3 s a row and 500 revocations: check it runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    seconds, count = (0.3, 500) if args.quick else (args.seconds, args.revocations)
    tokens, fid, alice, bob, root, child, revoked = setup(count)
    root_bytes, child_bytes, revoked_bytes = root.encode(), child.encode(), revoked.encode()

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    data = root.links[0].signed_bytes()
    signature = key.sign(data)

    def bare():
        public.verify(signature, data)

    def check_root():
        tokens.check(fid, root_bytes, alice.public_bytes)

    def check_child():
        tokens.check(fid, child_bytes, bob.public_bytes)

    def check_revoked():
        try:
            tokens.check(fid, revoked_bytes, bob.public_bytes)
        except TokenError as e:
            assert e.reason == t.REVOKED
        else:
            raise AssertionError("the revoked token passed")

    rows = [("bare Ed25519 verify", bare, 1), ("root token (1 link)", check_root, 1),
            ("2-link token", check_child, 2), ("2-link token, revoked", check_revoked, 2)]
    base = None
    out = {"revocations_held": count, "seconds_per_row": seconds,
           "token_bytes": {"root": len(root_bytes), "two_links": len(child_bytes)}, "rows": []}
    print(f"{count} revocations held; root token {len(root_bytes)} bytes, 2-link {len(child_bytes)} bytes")
    print(f"{'':<26}{'per second':>12}{'us each':>10}{'vs verify':>11}{'verifies':>10}")
    for label, fn, verifies in rows:
        per_s = rate(fn, seconds)
        base = base or per_s
        print(f"{label:<26}{per_s:>12,.0f}{1e6 / per_s:>10.1f}{per_s / base:>11.2f}{verifies:>10}")
        out["rows"].append({"what": label, "per_s": round(per_s), "us": round(1e6 / per_s, 2),
                            "ratio_to_verify": round(per_s / base, 3), "verifications": verifies})
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
