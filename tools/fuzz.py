"""
A bounded, structure-aware live fuzzer against a real ORB daemon.

    .venv/bin/python tools/fuzz.py --target tracker --seconds 60 [--connections 16] [--seed 1]
    .venv/bin/python tools/fuzz.py --target peer --seconds 600     # longer, by hand

It starts the daemon (``twistd orb-tracker`` or ``orb-peer``) on loopback
in a throwaway directory, then runs at once:

- an honest client, on its own session, that sends GETADDR every 0.25 s
  and needs an answer to each within 5 s;
- one hostile connection at a time with one of the keys the tracker admits (so its
  SYNC and DELTA are parsed and applied), biased to SYNC and DELTA frames;
- ``--connections`` hostile connections, each with a fresh key, claiming
  the peer or the tracker role at random. Each does one of: raw garbage
  below TLS, or inside TLS before the ORB handshake; a mutated or oversized HELLO; or a real handshake
  followed by a burst of frames built from one sample message of every
  type (RFC Appendix A) with edge values and byte mutations: flipped
  bytes, cut or padded bodies with a matching or a lying length, other
  type bytes, flags and request ids, and JSON payloads with extreme
  numbers. Writes are split at random points. Connections end gracefully
  or abruptly, and a new one starts.

It passes when the daemon is still running, its log holds no traceback,
and the honest client got every answer. Exit status 0 or 1; a summary
line either way. Only loopback is used; the daemon is stopped at the end.
"""

import argparse
import json
import os
import random
import sys
import tempfile

import attrs
from twisted.internet import defer, endpoints, protocol, reactor, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orb import devnet  # noqa: E402
from orb.devnet import Devnet, sleep  # noqa: E402
from orb.identity import NodeKey  # noqa: E402
from orb.net.tls import NodeTLS  # noqa: E402
from orb.protocol import messages as m  # noqa: E402
from orb.protocol import spec  # noqa: E402
from orb.protocol.codes import Role  # noqa: E402
from orb.protocol.frame import HEADER, encode_frame  # noqa: E402
from orb.protocol.session import SessionConfig  # noqa: E402

NETWORK = "fuzz"
HONEST_INTERVAL_S = 0.25
HONEST_TIMEOUT_S = 5.0
ADMITTED_KEYS = 200
EDGE_INTS = (0, 1, 2**8 - 1, 2**16 - 1, 2**32 - 1, 2**53, 2**63 - 1, 2**64 - 1)


def config():
    return SessionConfig(network=NETWORK)


def open_session(host, port, roles, key=None):
    """A real TLS connection and ORB handshake; fires with (protocol, handler)."""
    return devnet.open_session(host, port, NETWORK, roles, key)


class _Raw(protocol.Protocol):
    """A TLS connection that sends what it is told, and reads nothing it acts on."""

    def __init__(self):
        self.lost = defer.Deferred()

    def connectionLost(self, reason=None):
        if not self.lost.called:
            self.lost.callback(None)


def open_raw(host, port):
    key = NodeKey.generate()
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=5)
    return endpoint.connect(NodeTLS(key).wrap(protocol.Factory.forProtocol(_Raw), is_client=True))


# --- building hostile frames -------------------------------------------------------


def edge_variant(rng, message):
    """The message with one integer or bytes field set to an edge value, where the codec allows it."""
    fields = [a for a in attrs.fields(type(message))]
    rng.shuffle(fields)
    for a in fields:
        value = getattr(message, a.name)
        candidates = []
        if isinstance(value, int) and not isinstance(value, bool):
            candidates = list(EDGE_INTS)
        elif isinstance(value, bytes) and a.name in ("payload", "digest"):
            candidates = [json.dumps({"changes": [{"lamport": str(2**63 - 1), "seq": str(2**63 - 1)}],
                                      "more": False}).encode(), b"{}", b"[]", b"\xff" * 64, b"1e309",
                          json.dumps({"known": {}, "hash": "0" * 64}).encode()]
        elif isinstance(value, bytes):
            candidates = [b"", b"\x00" * len(value), b"\xff" * len(value)]
        elif isinstance(value, str):
            candidates = ["", "\u202e\x1b[2J" * 8, "x" * 300]
        elif isinstance(value, tuple):
            candidates = [(), value * 3]
        for candidate in rng.sample(candidates, len(candidates)):
            try:
                return attrs.evolve(message, **{a.name: candidate})
            except (TypeError, ValueError):
                continue
    return message


JSON_EDGES = (2**63 - 1, 2**63, -1, 2**53 + 1, 1.5, 1e308, "99999999999999999999", "-1", "", "x" * 300,
              "\u202e", None, True, [], {}, [[]], {"a": {"b": {"c": []}}})


def mutate_json(rng, data):
    """A JSON payload with one value, somewhere inside, replaced by an edge value (the frame stays valid)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return data
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])

    walk(doc, [])
    path = rng.choice(paths)
    if not path:
        return json.dumps(rng.choice(JSON_EDGES)).encode()
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = rng.choice(JSON_EDGES)
    return json.dumps(doc, separators=(",", ":"), sort_keys=rng.random() < 0.5).encode()


def hostile_frame(rng, magic, samples, frame_mutation_rate=6 / 7):
    """One frame's bytes: a sample message, maybe at an edge, then maybe mutated."""
    name, message, request_id, flags = rng.choice(samples)
    if isinstance(message, (m.Delta, m.Sync)) and rng.random() < 0.7:
        field = "payload" if isinstance(message, m.Delta) else "digest"
        message = attrs.evolve(message, **{field: mutate_json(rng, getattr(message, field))})
    elif rng.random() < 0.5:
        message = edge_variant(rng, message)
    request_id = rng.choice([request_id, 0, 1, rng.getrandbits(32)])
    flags = rng.choice([flags, 0, 1, rng.getrandbits(16)])
    try:
        frame = bytearray(encode_frame(magic, message, request_id % 2**32, flags % 2**16))
    except Exception:  # an edge value the encoder refuses: send the plain sample
        frame = bytearray(encode_frame(magic, samples[0][1], 1, 0))
    mutation = rng.randrange(1, 7) if rng.random() < frame_mutation_rate else 0
    body = frame[HEADER.size:]
    if mutation == 1 and body:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(body))
            body[i] ^= 1 << rng.randrange(8)
        frame[HEADER.size:] = body
    elif mutation == 2 and body:  # cut the body, with an honest length
        body = body[: rng.randrange(len(body))]
        frame = bytearray(HEADER.pack(magic, frame[4], frame[5], flags % 2**16, request_id % 2**32, len(body)) + body)
    elif mutation == 3:  # pad the body, with an honest length
        body = body + os.urandom(rng.randint(1, 64))
        frame = bytearray(HEADER.pack(magic, frame[4], frame[5], flags % 2**16, request_id % 2**32, len(body)) + body)
    elif mutation == 4:  # another type byte
        frame[5] = rng.randrange(256)
    elif mutation == 5:  # another version byte
        frame[4] = rng.randrange(256)
    elif mutation == 6:  # a length that lies (short: the rest reads as the next header)
        frame[12:16] = rng.randrange(0, len(body) + 1).to_bytes(4, "big")
    return bytes(frame)


@defer.inlineCallbacks
def write_split(rng, transport, data):
    """Write ``data`` in random pieces, sometimes with a pause between them."""
    pos = 0
    while pos < len(data):
        n = rng.randint(1, max(1, len(data) - pos))
        transport.write(data[pos : pos + n])
        pos += n
        if rng.random() < 0.1:
            yield sleep(rng.uniform(0, 0.05))


# --- the run --------------------------------------------------------------------------


class Fuzz:
    def __init__(self, args, host, port):
        self.args = args
        self.host = host
        self.port = port
        self.rng = random.Random(args.seed)
        self.samples = spec.sample_messages()
        self.magic = config().magic
        self.stop_at = reactor.seconds() + args.seconds
        self.counts = {"connections": 0, "frames": 0, "handshakes": 0, "honest_ok": 0, "honest_failed": 0}

    def running(self):
        return reactor.seconds() < self.stop_at

    @defer.inlineCallbacks
    def honest(self):
        p, _ = yield open_session(self.host, self.port, Role.PEER)
        while self.running():
            try:
                yield p.request(m.GetAddr(), timeout_s=HONEST_TIMEOUT_S)
                self.counts["honest_ok"] += 1
            except Exception as e:
                self.counts["honest_failed"] += 1
                print(f"honest request failed: {e!r}", flush=True)
                if not p.ready:
                    p, _ = yield open_session(self.host, self.port, Role.PEER)
            yield sleep(HONEST_INTERVAL_S)
        p.close("fuzz done")

    @defer.inlineCallbacks
    def worker(self, seed, keys=None):
        rng = random.Random(seed)
        turn = 0
        while self.running():
            self.counts["connections"] += 1
            key = keys[turn % len(keys)] if keys else None
            turn += 1
            try:
                yield self.one_connection(rng, key)
            except Exception:
                pass  # refused, reset, timed out: all expected
            yield sleep(rng.uniform(0, 0.05))

    @defer.inlineCallbacks
    def one_connection(self, rng, key=None):
        mode = rng.random()
        if key is not None:  # the admitted tracker: always a full session, so SYNC and DELTA are parsed
            p, _ = yield open_session(self.host, self.port, Role.TRACKER | Role.RELAY, key)
            self.counts["handshakes"] += 1
            for _ in range(rng.randint(1, 40)):
                if not p.ready or not self.running():
                    break
                federation = [s for s in self.samples if s[0] in ("sync", "delta")]
                data = hostile_frame(rng, self.magic, federation if rng.random() < 0.7 else self.samples,
                                     frame_mutation_rate=0.05)
                self.counts["frames"] += 1
                yield write_split(rng, p.transport, data)
            yield sleep(rng.uniform(0, 0.2))
            if p.transport is not None:
                p.transport.loseConnection()
                yield sleep(0.1)
            return
        if mode < 0.2:  # before any ORB handshake
            wrapped = yield open_raw(self.host, self.port)
            choice = rng.randrange(4)
            if choice == 3:  # garbage below TLS, on the TCP stream itself
                yield write_split(rng, wrapped.transport, os.urandom(rng.randint(1, 4096)))
                wrapped.transport.abortConnection()
                return
            if choice == 0:
                data = os.urandom(rng.randint(1, 4096))
            elif choice == 1:  # a header announcing the largest frame, then a little of it
                data = HEADER.pack(self.magic, 1, 1, 0, 0, 2**32 - 1) + os.urandom(1024)
            else:  # a HELLO-shaped frame, mutated
                data = hostile_frame(rng, self.magic, [s for s in self.samples if s[0] == "hello"] or self.samples)
            self.counts["frames"] += 1
            yield write_split(rng, wrapped, data)  # through TLS: garbage at the ORB layer
            yield sleep(rng.uniform(0, 0.5))
            wrapped.transport.abortConnection()
            return
        roles = rng.choice([Role.PEER, Role.TRACKER | Role.RELAY, Role.PEER | Role.RELAY])
        p, handler = yield open_session(self.host, self.port, roles)
        self.counts["handshakes"] += 1
        for _ in range(rng.randint(1, 40)):
            if not p.ready or not self.running():
                break
            data = hostile_frame(rng, self.magic, self.samples)
            self.counts["frames"] += 1
            yield write_split(rng, p.transport, data)
        yield sleep(rng.uniform(0, 0.2))
        if p.transport is not None:
            if rng.random() < 0.5:
                p.transport.abortConnection()
            else:
                p.transport.loseConnection()


@defer.inlineCallbacks
def run(args):
    base = tempfile.mkdtemp(prefix="orb-fuzz-")
    net = Devnet(base, network=NETWORK)
    try:
        # Hostile trackers the target admits, so their SYNC and DELTA get parsed: one is banned at its
        # first malformed DELTA, so there are many, used in turn.
        admitted = [NodeKey.generate() for _ in range(ADMITTED_KEYS)]
        if args.target == "tracker":
            admit = [arg for key in admitted for arg in ("--admit", key.node_id.hex())]
            daemon = yield net.start_tracker("target", *admit)
        else:
            daemon = yield net.start_peer("target", "--outbound-peers", "0", "--outbound-trackers", "0")
        host, port = daemon.wire
        fuzz = Fuzz(args, host, port)
        print(f"fuzzing orb-{args.target} at {host}:{port} for {args.seconds:g} s with "
              f"{args.connections} connections, seed {args.seed}", flush=True)
        jobs = [fuzz.honest(), fuzz.worker(args.seed * 1000 - 1, admitted)]
        jobs += [fuzz.worker(args.seed * 1000 + i) for i in range(args.connections)]
        yield defer.DeferredList(jobs, consumeErrors=True)
        yield sleep(1.0)
        alive = daemon.running
        tracebacks = daemon.tracebacks
        print(f"federation input refused by the target: {daemon.text.count('bad DELTA')} bad DELTA lines (in the log tail)", flush=True)
        yield net.stop_all()
        c = fuzz.counts
        ok = alive and tracebacks == 0 and c["honest_failed"] == 0 and c["honest_ok"] > 0
        print(f"{'PASS' if ok else 'FAIL'}: orb-{args.target} alive={alive} tracebacks={tracebacks} "
              f"connections={c['connections']} handshakes={c['handshakes']} frames={c['frames']} "
              f"honest={c['honest_ok']} ok / {c['honest_failed']} failed", flush=True)
        if tracebacks:
            start = daemon.text.find("Traceback")
            print(daemon.text[max(0, start - 500): start + 3000])
        if not ok:
            raise RuntimeError(f"the fuzz run against orb-{args.target} failed")
    finally:
        yield net.stop_all(__import__("signal").SIGKILL)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("tracker", "peer"), default="tracker")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    task.react(lambda _reactor: run(args))  # exits 0 on a pass, 1 on a failure


if __name__ == "__main__":
    main()
