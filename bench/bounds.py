"""
What a remote can make a daemon hold and do, measured against a real
tracker (``twistd orb-tracker`` on loopback), each figure beside a
baseline measured in the same run (issue 9):

1. RSS per idle ORB session, against RSS per idle connection of a plain
   Twisted TLS echo server (same TLS library, same key type);
2. RSS added per connection by 50 connections that each announce the
   largest frame allowed before the handshake and send all but its last
   byte (then hold it);
3. SYNC amplification, bytes out per byte in: 100 pipelined SYNCs with an
   empty digest from a node claiming the tracker role unadmitted, and the
   same from an admitted tracker over one rate window;
4. TLS + HELLO handshakes per second, against TLS handshakes per second
   with a plain Python accept loop (blocking pyOpenSSL with ORB's TLS
   context; the same Twisted TLS client for both, 8 at a time);
5. PING round trips per second over 50 sessions, against 24-byte echo
   round trips per second over 50 connections to the plain TLS echo server.

    .venv/bin/python bench/bounds.py [--seconds 5]

Two cores: the client load runs in this process, the servers in others.
Quote the ratios; absolute figures move with the machine.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

from twisted.internet import defer, endpoints, protocol, reactor, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orb import devnet  # noqa: E402
from orb.devnet import Devnet, sleep  # noqa: E402
from orb.identity import NodeKey  # noqa: E402
from orb.net.tls import NodeTLS  # noqa: E402
from orb.protocol import messages as m  # noqa: E402
from orb.protocol.codes import Role  # noqa: E402
from orb.protocol.frame import HEADER  # noqa: E402
from orb.protocol.session import SessionConfig  # noqa: E402

NETWORK = "bench"

# A plain TLS echo server (Twisted, Ed25519 self-signed certificate like ORB's) and a plain
# Python accept loop doing blocking TLS handshakes, each in its own process: the baselines.
# Both use ORB's TLS context. The accept loop once used the ssl module, which is linked to
# another OpenSSL (3.0 here, against 4.0 in pyOpenSSL) and so negotiated plain X25519 where
# ORB negotiates X25519MLKEM768, asked for no client certificate (so verified no client
# signature), and sent session tickets: a different handshake from the one ORB does.
ECHO_SERVER = textwrap.dedent("""
    import sys
    from twisted.internet import endpoints, protocol, reactor
    from orb.identity import NodeKey
    from orb.net.tls import NodeTLS
    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data)
    key = NodeKey.generate()
    factory = NodeTLS(key).wrap(protocol.Factory.forProtocol(Echo), is_client=False)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()
""")
ACCEPT_LOOP = textwrap.dedent("""
    import socket
    from OpenSSL import SSL
    from orb.identity import NodeKey
    from orb.net.tls import NodeTLS
    # ORB's own TLS context (pyOpenSSL, the same OpenSSL build): TLS 1.3, a client
    # certificate required, no session tickets, the same key-exchange groups.
    ctx = NodeTLS(NodeKey.generate()).context
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    print(s.getsockname()[1], flush=True)
    while True:
        c, _ = s.accept()
        try:
            t = SSL.Connection(ctx, c)
            t.set_accept_state()
            t.do_handshake()
            t.sendall(b"x")
        except (OSError, SSL.Error):
            pass
        c.close()
""")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_script(source):
    proc = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    port = int(proc.stdout.readline())
    return proc, port


@defer.inlineCallbacks
def orb_session(host, port, roles=Role.PEER, key=None):
    p, handler = yield devnet.open_session(host, port, NETWORK, roles, key)
    p.bench_handler = handler
    return p


class _Client(protocol.Protocol):
    def __init__(self):
        self.connected_d = defer.Deferred()
        self.waiting = None
        self.buffer = b""

    def connectionMade(self):
        self.connected_d.callback(self)

    def dataReceived(self, data):
        self.buffer += data
        if self.waiting is not None and len(self.buffer) >= self.waiting[1]:
            d, n = self.waiting
            self.waiting = None
            self.buffer = self.buffer[n:]
            d.callback(None)

    def expect(self, n):
        d = defer.Deferred()
        self.waiting = (d, n)
        self.dataReceived(b"")
        return d


@defer.inlineCallbacks
def tls_client(host, port):
    key = NodeKey.generate()
    factory = protocol.Factory.forProtocol(_Client)
    wrapper = yield endpoints.TCP4ClientEndpoint(reactor, host, port).connect(NodeTLS(key).wrap(factory, is_client=True))
    client = wrapper.wrappedProtocol
    return client, wrapper


@defer.inlineCallbacks
def idle_rss(pid, open_one, n):
    before = rss_kb(pid)
    held = []
    for _ in range(n):
        held.append((yield open_one()))
    yield sleep(2.0)
    after = rss_kb(pid)
    return (after - before) / n, held


@defer.inlineCallbacks
def rate(seconds, concurrency, one):
    """(operations done, seconds taken): ``concurrency`` loops calling ``one`` for ``seconds``."""
    done = [0]
    stop = time.perf_counter() + seconds

    @defer.inlineCallbacks
    def loop():
        while time.perf_counter() < stop:
            yield one()
            done[0] += 1

    t0 = time.perf_counter()
    yield defer.gatherResults([loop() for _ in range(concurrency)])
    return done[0], time.perf_counter() - t0


@defer.inlineCallbacks
def rates(seconds, concurrency, ones, slice_s=0.5):
    """
    Operations per second of each of ``ones`` (name -> one), measured in
    turns of ``slice_s`` (ABBA order) for ``seconds`` each in all, so that
    the load of other work on the machine falls on each the same.
    """
    totals = {name: [0, 0.0] for name in ones}
    names = list(ones)
    turns = max(1, round(seconds / slice_s))
    for turn in range(turns):
        for name in (names if turn % 2 == 0 else names[::-1]):
            n, dt = yield rate(seconds / turns, concurrency, ones[name])
            totals[name][0] += n
            totals[name][1] += dt
    return {name: n / dt for name, (n, dt) in totals.items()}


@defer.inlineCallbacks
def main_async(args):
    base = tempfile.mkdtemp(prefix="orb-bench-bounds-")
    net = Devnet(base, network=NETWORK)
    echo, echo_port = start_script(ECHO_SERVER)
    accept, accept_port = start_script(ACCEPT_LOOP)
    results = {"load_avg_1min": {"start": os.getloadavg()[0]}}
    try:
        admitted = NodeKey.generate()
        tracker = yield net.start_tracker("t", "--admit", admitted.node_id.hex())
        host, port = tracker.wire
        pid = tracker.info["pid"]
        yield sleep(1.0)

        # 1. idle sessions
        print("1. idle sessions...", flush=True)
        orb_kb, held = yield idle_rss(pid, lambda: orb_session(host, port), args.sessions)
        echo_kb, held_echo = yield idle_rss(echo.pid, lambda: tls_client("127.0.0.1", echo_port), args.sessions)
        results["rss_per_idle_session_kb"] = {"orb": orb_kb, "plain_tls_echo": echo_kb}
        for p in held:
            p.transport.abortConnection()
        for _, w in held_echo:
            w.transport.abortConnection()
        yield sleep(1.0)

        # 2. pre-handshake frames, held just short of complete
        print("2. pre-handshake frames...", flush=True)
        magic = SessionConfig(network=NETWORK).magic
        fresh = yield net.start_tracker("t-prehandshake")  # a fresh process: freed memory would hide the growth
        host2, port2 = fresh.wire
        pid2 = fresh.info["pid"]
        yield sleep(1.0)
        before = rss_kb(pid2)
        pending = []
        refused = 0
        limit = SessionConfig().handshake_max_frame_bytes
        for _ in range(50):
            try:
                client, wrapper = yield tls_client(host2, port2)
            except Exception:
                refused += 1  # the listener's per-IP cap on pending handshakes
                continue
            client.transport.write(HEADER.pack(magic, 1, 1, 0, 0, limit) + b"\x00" * (limit - 1))
            pending.append(wrapper)
        yield sleep(2.0)
        held = [w for w in pending if w.connected]
        pre_kb = (rss_kb(pid2) - before) / max(1, len(held))  # per connection the daemon still holds
        results["rss_per_prehandshake_connection_kb"] = pre_kb
        results["prehandshake_connections"] = {"tried": 50, "refused_at_connect": refused, "accepted": len(pending),
                                               "still_open_after_2s": len(held)}
        for w in pending:
            w.transport.abortConnection()
        yield sleep(1.0)

        # 3. SYNC amplification
        print("3. SYNC amplification...", flush=True)
        counted = {"in": 0, "out": 0}

        def count(direction, message_type, size_bytes):
            counted["in" if direction == "tx" else "out"] += size_bytes  # our tx is the tracker's input

        empty = json.dumps({"hash": "0" * 64, "known": {}}, separators=(",", ":")).encode()
        for label, key in (("unadmitted", NodeKey.generate()), ("admitted", admitted)):
            counted.update({"in": 0, "out": 0})
            p = yield orb_session(host, port, Role.TRACKER | Role.RELAY, key)
            p.session.on_frame = count
            yield sleep(0.5)
            counted.update({"in": 0, "out": 0})
            ds = [p.request(m.Sync(digest=empty), timeout_s=10).addErrback(lambda f: None) for _ in range(60)]
            yield defer.gatherResults(ds)
            yield sleep(0.5)
            results[f"sync_amplification_{label}"] = counted["out"] / max(1, counted["in"])
            p.transport.loseConnection()
        yield sleep(0.5)

        # 4. handshakes per second
        print("4. handshakes per second...", flush=True)
        @defer.inlineCallbacks
        def orb_handshake():
            p = yield orb_session(host, port)
            p.transport.abortConnection()

        @defer.inlineCallbacks
        def plain_handshake():
            # The same client (Twisted + pyOpenSSL, Ed25519 key) against the plain accept loop,
            # which sends one byte once its handshake is done.
            client, wrapper = yield tls_client("127.0.0.1", accept_port)
            yield client.expect(1)
            wrapper.transport.abortConnection()

        results["handshakes_per_s"] = yield rates(args.seconds, 8, {"orb": orb_handshake,
                                                                     "plain_tls_accept_loop": plain_handshake})

        # 5. PING round trips
        print("5. PING round trips over 50 sessions...", flush=True)
        sessions = []
        for _ in range(50):
            sessions.append((yield orb_session(host, port)))
        echoes = []
        for _ in range(50):
            echoes.append((yield tls_client("127.0.0.1", echo_port)))

        def make_orb_one():
            free = list(sessions)

            @defer.inlineCallbacks
            def one():
                p = free.pop()  # one PING in flight per session, as the protocol allows
                p.bench_handler.pong = defer.Deferred()
                p.ping()
                yield p.bench_handler.pong
                free.append(p)
            return one

        def make_echo_one():
            free = list(echoes)

            @defer.inlineCallbacks
            def one():
                client, wrapper = free.pop()  # one message in flight per connection
                d = client.expect(24)
                client.transport.write(b"x" * 24)
                yield d
                free.append((client, wrapper))
            return one

        results["round_trips_per_s_50_sessions"] = yield rates(args.seconds, 50, {"orb": make_orb_one(),
                                                                                 "plain_tls_echo": make_echo_one()})
        for p in sessions:
            p.transport.abortConnection()
        for _, w in echoes:
            w.transport.abortConnection()
    finally:
        echo.kill()
        accept.kill()
        yield net.stop_all()
    results["load_avg_1min"]["end"] = os.getloadavg()[0]
    report(results)


def report(r):
    idle = r["rss_per_idle_session_kb"]
    hs = r["handshakes_per_s"]
    rt = r["round_trips_per_s_50_sessions"]
    rows = [
        ("RSS per idle session", f"{idle['orb']:.0f} kB", f"{idle['plain_tls_echo']:.0f} kB (plain TLS echo)",
         "<= 64 kB"),
        ("RSS per connection holding a maximal pre-handshake frame", f"{r['rss_per_prehandshake_connection_kb']:.0f} kB",
         "{still_open_after_2s} of {tried} held (per-IP cap)".format(**r["prehandshake_connections"]), "<= 128 kB"),
        ("SYNC amplification, unadmitted claimant (bytes out / in)", f"{r['sync_amplification_unadmitted']:.2f}x",
         "-", "<= 20x"),
        ("SYNC amplification, admitted tracker, 60 SYNCs in one window", f"{r['sync_amplification_admitted']:.2f}x",
         "-", "<= 20x"),
        ("TLS + HELLO handshakes/s", f"{hs['orb']:.0f}/s", f"{hs['plain_tls_accept_loop']:.0f}/s (plain accept loop)",
         f"ratio {hs['orb'] / hs['plain_tls_accept_loop']:.2f} (target >= 0.8)"),
        ("PING round trips/s, 50 sessions", f"{rt['orb']:.0f}/s", f"{rt['plain_tls_echo']:.0f}/s (plain TLS echo)",
         f"ratio {rt['orb'] / rt['plain_tls_echo']:.2f} (target >= 0.5)"),
    ]
    width = max(len(row[0]) for row in rows)
    for name, orb, base, target in rows:
        print(f"{name:<{width}}  {orb:>10}  {base:>36}  {target}")
    print("load average (1 min) {start:.2f} at the start, {end:.2f} at the end".format(**r["load_avg_1min"]))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bounds.json"), "w") as f:
        json.dump(r, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="each rate is measured for this long")
    parser.add_argument("--sessions", type=int, default=200, help="idle sessions opened for the RSS figure")
    args = parser.parse_args()
    task.react(lambda _r: main_async(args))


if __name__ == "__main__":
    main()
