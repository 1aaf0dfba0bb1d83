"""
Codec throughput: encode + decode per second for PING, a 1000-entry ADDR
and a 1 MiB INVOKE, against a hand-written ``struct`` baseline measured in
the same run.

    .venv/bin/python bench/codec.py [--seconds 1.0]

Targets (issue 2): >= 100k encode+decode/s for small frames on one core,
>= 500 MB/s for 1 MiB payloads.
"""

import argparse
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orb.protocol import messages as m  # noqa: E402
from orb.protocol.frame import HEADER, FrameDecoder, encode_frame, network_magic  # noqa: E402

MAGIC = network_magic("main")


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


# --- ORB codec ----------------------------------------------------------------


def orb_roundtrip(message):
    decoder = FrameDecoder(MAGIC)

    def run():
        (frame,) = decoder.feed(encode_frame(MAGIC, message, 1))
        return frame

    return run


# --- baseline: hand-written struct, no validation, no objects ----------------------

PING_BODY = struct.Struct(">Q")
ENTRY = struct.Struct(">Q16sHB32s")
U32 = struct.Struct(">I")


def baseline_ping():
    def run():
        data = HEADER.pack(MAGIC, 1, 3, 0, 1, 8) + PING_BODY.pack(7)
        header = HEADER.unpack_from(data)
        return header, PING_BODY.unpack_from(data, HEADER.size)

    return run


def baseline_addr(entries):
    raw = [(e.timestamp, m.ip_to_wire(e.host), e.port, e.roles, e.node_id) for e in entries]

    def run():
        body = struct.pack(">H", len(raw)) + b"".join(ENTRY.pack(*r) for r in raw)
        data = HEADER.pack(MAGIC, 1, 6, 0, 1, len(body)) + body
        HEADER.unpack_from(data)
        (count,) = struct.unpack_from(">H", data, HEADER.size)
        return [ENTRY.unpack_from(data, HEADER.size + 2 + i * ENTRY.size) for i in range(count)]

    return run


def baseline_invoke(fid, payload):
    def run():
        body = bytes([len(fid)]) + fid + struct.pack(">IH", 5000, 0) + U32.pack(len(payload)) + payload
        data = HEADER.pack(MAGIC, 1, 0x30, 0, 1, len(body)) + body
        HEADER.unpack_from(data)
        offset = HEADER.size + 1 + len(fid) + 6
        (length,) = U32.unpack_from(data, offset)
        return data[offset + 4 : offset + 4 + length]

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args(argv)

    fid = b"\x01" + os.urandom(32)
    entries = tuple(
        m.AddrEntry(1_764_000_000, f"10.{i // 250}.{i % 250}.1", 7400, 1, os.urandom(32)) for i in range(1000)
    )
    payload = os.urandom(1024 * 1024)
    cases = [
        ("PING", orb_roundtrip(m.Ping(nonce=7)), baseline_ping(), None),
        ("ADDR x1000", orb_roundtrip(m.Addr(entries=entries)), baseline_addr(entries), None),
        (
            "INVOKE 1 MiB",
            orb_roundtrip(m.Invoke(fid=fid, deadline_ms=5000, token=b"", input=payload)),
            baseline_invoke(fid, payload),
            len(payload),
        ),
    ]
    print(f"codec encode+decode round trips, best of 3 x {args.seconds / 3:.2f} s, one core")
    print(f"{'message':<14} {'orb /s':>12} {'struct /s':>12} {'orb/struct':>10} {'orb MB/s':>10} {'struct MB/s':>11}")
    for name, orb_fn, base_fn, size in cases:
        orb_rate = rate(orb_fn, args.seconds)
        base_rate = rate(base_fn, args.seconds)
        mb = lambda r: f"{r * size / 1e6:10.0f}" if size else f"{'':>10}"  # noqa: E731
        print(f"{name:<14} {orb_rate:12,.0f} {base_rate:12,.0f} {orb_rate / base_rate:10.2f} {mb(orb_rate)} {mb(base_rate):>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
