"""
Deploying functions through the network (issue 10), each figure beside a
baseline measured in the same run:

- ``deploy``: ``orb deploy`` (the real command) of a 100 KiB package to a
  tracker and 4 peers on loopback, until 3 replicas are verified; p50 over
  several functions. Baseline: ``orb run --samples`` of the same function,
  the local sample run that deploy starts with. Target: p50 <= 1 s.
- ``rereplication``: a host of the function is SIGKILLed; the time until
  the tracker reports 3 verified replicas again. Target: <= 5 s.

- ``transfer``: a 50 MiB package over FETCH/PACKAGE, fetched by the real
  Fetcher into a real (threaded) PackageStore, verified; against raw TLS
  throughput between the same two processes (the same TLS library and key
  type). Target: ratio >= 0.3. The server is a child process running the
  peer daemon's own service (``orb.peer.tap.makeService``: store, core,
  wire listener) with a raw TLS blob listener beside it in the same
  reactor; the client is this process.
- ``hosting_memory``: resident memory of a ``twistd orb-peer`` hosting
  1,000 functions (its store pre-filled, re-verified on start, announced
  to a tracker) against the same daemon hosting none. Target: <= 150 MiB.

Each measure is a function ``measure_x(args) -> Deferred[list[Row]]``
listed in MEASURES; ``main()`` runs those asked for and prints one table.

    .venv/bin/python bench/deploy.py [--only deploy,rereplication,transfer,hosting_memory]
                                     [--deploys 7] [--kills 3] [--mib 50] [--functions 1000]

Quote the ratios; absolute figures move with the machine. Figures also go
to bench/out/deploy.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import attrs
from twisted.internet import defer, endpoints, protocol, reactor, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orb import devnet  # noqa: E402
from orb.devnet import Devnet, eventually, sleep  # noqa: E402
from orb.identity import NodeKey  # noqa: E402
from orb.net import packages as pk  # noqa: E402
from orb.net.fetch import Fetcher  # noqa: E402
from orb.net.sessions import SessionRecord  # noqa: E402
from orb.net.tls import NodeTLS  # noqa: E402
from orb.protocol import fid as fidmod  # noqa: E402
from orb.protocol import manifest as mf  # noqa: E402
from orb.protocol import messages as m  # noqa: E402
from orb.protocol.package import PackageFile, pack  # noqa: E402

NETWORK = "bench"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024

TOML = """\
name = "f{i}"
version = "1.0.0"
runtime = "python"

[[sample]]
name = "echo"
input = "x"
output = "x"
"""


@attrs.frozen
class Row:
    """One line of the table: the measure, ORB's figure, its same-run baseline, and the target."""

    name: str
    orb: str
    baseline: str
    target: str


def make_package(i, payload_bytes=0):
    """A small valid function package (distinct per ``i``), optionally padded with ``payload_bytes``."""
    manifest = mf.from_toml(TOML.format(i=i))
    files = [PackageFile("main.py", f"def handler(event, context):\n    return event  # {i}\n".encode())]
    if payload_bytes:
        files.append(PackageFile("blob.bin", os.urandom(payload_bytes)))
    return pack(files, manifest.to_json(), max_package_bytes=1 << 30)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@defer.inlineCallbacks
def fill_store(data_dir, packages):
    """Write ``packages`` into the store of ``data_dir`` as a daemon would find it."""
    os.makedirs(data_dir, exist_ok=True)
    store = yield pk.PackageStore.open(reactor, data_dir, max_bytes=1 << 40, max_packages=len(packages) + 16)
    for data in packages:
        yield store.put(data)
    store.close()
    yield store.db.close()


# --- transfer -----------------------------------------------------------------------------

SERVER = textwrap.dedent("""
    import json, sys
    from twisted.internet import protocol, reactor
    from orb.identity import NodeKey
    from orb.net.tls import NodeTLS
    from orb.peer import tap

    data_dir, network, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    BLOCK = bytes(256 * 1024)

    class Blob(protocol.Protocol):
        # Writes `total` bytes as fast as the connection takes them (a pull producer).
        def connectionMade(self):
            self.left = total
            self.transport.registerProducer(self, False)
        def resumeProducing(self):
            n = min(len(BLOCK), self.left)
            self.transport.write(BLOCK[:n])
            self.left -= n
            if not self.left:
                self.transport.unregisterProducer()
        def stopProducing(self):
            self.left = 0

    options = tap.Options()
    options.parseOptions(["--data-dir", data_dir, "--listen", "tcp:0:interface=127.0.0.1", "--network", network,
                          "--max-disk-mb", "4096"])
    service = tap.makeService(options)
    raw = reactor.listenTCP(0, NodeTLS(NodeKey.generate()).wrap(protocol.Factory.forProtocol(Blob), is_client=False),
                            interface="127.0.0.1")

    def started(core):
        print(json.dumps({"wire": core.local.listening[1], "raw": raw.getHost().port,
                          "node_id": core.node_id.hex()}), flush=True)

    service.started.addCallback(started)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # as twistd does
    reactor.run()
""")


class _Sink(protocol.Protocol):
    """Counts bytes until ``total`` have arrived."""

    def __init__(self, total):
        self.total = total
        self.got = 0
        self.started = None
        self.done = defer.Deferred()

    def connectionMade(self):
        self.started = time.perf_counter()

    def dataReceived(self, data):
        self.got += len(data)
        if self.got >= self.total and not self.done.called:
            self.done.callback(time.perf_counter() - self.started)


@defer.inlineCallbacks
def raw_tls_seconds(port, total):
    sink = _Sink(total)
    factory = protocol.Factory.forProtocol(lambda: sink)
    wrapper = yield endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        NodeTLS(NodeKey.generate()).wrap(factory, is_client=True))
    seconds = yield sink.done
    wrapper.transport.loseConnection()
    return seconds


class _NoTable:
    """What the Fetcher asks of a session table, for a fetch over one given session."""

    class local:
        node_id = b"\x00" * 32

    def get(self, node_id):
        return None

    def misbehaved(self, protocol, err):
        raise RuntimeError(f"the source misbehaved: {err}")

    def discourage(self, protocol, why):
        raise RuntimeError(f"the source was discouraged: {why}")


@defer.inlineCallbacks
def wire_only_seconds(p, fid, size, chunk=pk.MAX_READ_BYTES, window=4):
    """FETCH/PACKAGE alone: the same pipelining, the chunks dropped on arrival (no disk, no hash)."""
    t0 = time.perf_counter()
    offsets = list(range(0, size, chunk))
    pending = set()
    done = defer.Deferred()

    def next_one():
        if not offsets:
            if not pending and not done.called:
                done.callback(None)
            return
        offset = offsets.pop(0)
        pending.add(offset)
        d = p.request(m.Fetch(fid=fid, offset=offset, length=min(chunk, size - offset)), timeout_s=30)

        def got(_):
            pending.discard(offset)
            next_one()

        d.addCallbacks(got, done.errback)

    for _ in range(window):
        next_one()
    yield done
    return time.perf_counter() - t0


@defer.inlineCallbacks
def measure_transfer(args):
    base = tempfile.mkdtemp(prefix="orb-bench-deploy-")
    total = args.mib * MIB
    print(f"transfer: building a {args.mib} MiB package...", flush=True)
    data = make_package(0, total - 4096)
    fid = fidmod.fid_for(data)
    size = len(data)
    server_dir = os.path.join(base, "server")
    yield fill_store(server_dir, [data])
    del data
    proc = subprocess.Popen([sys.executable, "-c", SERVER, server_dir, NETWORK, str(size)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        results = {"raw": [], "orb": [], "wire": []}
        for round_ in range(args.rounds):
            print(f"transfer: round {round_ + 1} of {args.rounds}...", flush=True)
            results["raw"].append((yield raw_tls_seconds(info["raw"], size)))
            p, _ = yield devnet.open_session("127.0.0.1", info["wire"], NETWORK)
            results["wire"].append((yield wire_only_seconds(p, fid, size)))
            client_dir = os.path.join(base, f"client-{round_}")
            os.makedirs(client_dir)
            store = yield pk.PackageStore.open(reactor, client_dir, max_bytes=4 << 30)
            record = SessionRecord(p, None, reactor.seconds())
            fetcher = Fetcher(reactor, _NoTable(), store, request_timeout_s=60)
            t0 = time.perf_counter()
            entry = yield fetcher.fetch(fid, size, [record])
            results["orb"].append(time.perf_counter() - t0)
            assert entry.size == size
            p.transport.loseConnection()
            store.close()
            yield store.db.close()
            shutil.rmtree(client_dir)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(base, ignore_errors=True)
    best = {k: min(v) for k, v in results.items()}
    rate = {k: size / MIB / s for k, s in best.items()}
    ratio = rate["orb"] / rate["raw"]
    RESULTS["transfer"] = {"bytes": size, "seconds": results, "mib_per_s_best": rate, "ratio": ratio}
    return [
        Row(f"package transfer, {args.mib} MiB FETCH/PACKAGE (fetched, stored, verified)", f"{rate['orb']:.0f} MiB/s",
            f"{rate['raw']:.0f} MiB/s raw TLS", f"ratio {ratio:.2f} (target >= 0.3)"),
        Row("  of which the wire alone (same pipelining, chunks dropped)", f"{rate['wire']:.0f} MiB/s",
            f"{rate['raw']:.0f} MiB/s raw TLS", f"ratio {rate['wire'] / rate['raw']:.2f}"),
    ]


# --- hosting memory -----------------------------------------------------------------------


@defer.inlineCallbacks
def measure_hosting_memory(args):
    base = tempfile.mkdtemp(prefix="orb-bench-deploy-")
    net = Devnet(base, network=NETWORK)
    n = args.functions
    try:
        print(f"hosting_memory: filling a store with {n} packages...", flush=True)
        yield fill_store(os.path.join(base, "full"), [make_package(i) for i in range(n)])
        tracker = yield net.start_tracker("t")
        common = ("--tracker", tracker.wire_text, "--max-functions", str(n))
        empty = yield net.start_peer("empty", *common)
        full = yield net.start_peer("full", *common)
        for peer, want in ((empty, 0), (full, n)):
            yield eventually(lambda peer=peer, want=want: (peer.status().get("functions") == want
                                                           and peer.status().get("primary")),
                             timeout_s=60, what=f"{peer.data_dir} announcing {want} functions")

        @defer.inlineCallbacks
        def registered():
            code, body = yield tracker.get_json(f"/api/v1/peers/{full.node_id}")
            return code == 200 and len(body.get("functions", {})) == n

        yield eventually(registered, timeout_s=60, what="the tracker registering the 1,000 functions")
        yield sleep(3.0)
        rss = {"empty": rss_kb(empty.info["pid"]), "full": rss_kb(full.info["pid"])}
    finally:
        yield net.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    RESULTS["hosting_memory"] = {"functions": n, "rss_kb": rss}
    return [Row(f"RSS of a peer hosting {n:,} functions", f"{rss['full'] / 1024:.1f} MiB",
                f"{rss['empty'] / 1024:.1f} MiB hosting none",
                f"+{(rss['full'] - rss['empty']) / 1024:.1f} MiB (target <= 150 MiB)")]


ORB = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "orb")


@defer.inlineCallbacks
def _network(base, peers=4):
    """A tracker and ``peers`` peers, each on its own 127.N.0.1 (its own /16), settled."""
    net = Devnet(base, network=NETWORK)
    tracker = yield net.start_tracker("t1")
    for i in range(1, peers + 1):
        yield net.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", tracker.wire_text)
    yield sleep(3)
    return net, tracker


def _orb_env(base):
    return dict(os.environ, ORB_HOME=os.path.join(base, "owner"), ORB_NETWORK=NETWORK)


@defer.inlineCallbacks
def _orb(base, *argv):
    from twisted.internet import utils

    out, err, code = yield utils.getProcessOutputAndValue(ORB, argv, env=_orb_env(base))
    if code:
        raise RuntimeError(f"orb {argv[0]} exited {code}: {(err or out).decode()[-500:]}")
    return out.decode()


@defer.inlineCallbacks
def _function_dir(base, name, payload_bytes):
    path = os.path.join(base, name)
    yield _orb(base, "init", path, "--template", "python", "--name", name)
    with open(os.path.join(path, "blob.bin"), "wb") as f:
        f.write(os.urandom(payload_bytes))
    return path


def _p50(values):
    values = sorted(values)
    return values[len(values) // 2]


@defer.inlineCallbacks
def measure_deploy(args):
    """`orb deploy` of a 100 KiB package to 3 verified replicas on loopback, p50 over ``--deploys`` functions;
    baseline: `orb run --samples` of the same function alone (the local sample run that deploy starts with)."""
    base = tempfile.mkdtemp(prefix="orb-bench-deploy-")
    net, tracker = yield _network(base)
    try:
        yield _orb(base, "keygen")
        deploys, runs = [], []
        for i in range(args.deploys):
            path = yield _function_dir(base, f"bench{i}", 100 * 1024)
            started = time.monotonic()
            yield _orb(base, "run", path, "--samples")
            runs.append(time.monotonic() - started)
            started = time.monotonic()
            yield _orb(base, "deploy", path, "--tracker", tracker.wire_text)
            deploys.append(time.monotonic() - started)
        RESULTS["deploy"] = {"deploy_s": deploys, "local_samples_s": runs}
        return [Row(f"orb deploy, 100 KiB, to 3 verified replicas (p50 of {len(deploys)})",
                    f"{_p50(deploys):.2f} s", f"{_p50(runs):.2f} s local sample run", "p50 <= 1 s")]
    finally:
        yield net.stop_all()
        shutil.rmtree(base, ignore_errors=True)


@defer.inlineCallbacks
def measure_rereplication(args):
    """SIGKILL one of a function's 3 hosts; the time until the tracker reports 3 verified replicas again,
    polled every 50 ms (``--kills`` rounds, the p50 and the worst)."""
    import signal

    base = tempfile.mkdtemp(prefix="orb-bench-rerepl-")
    net, tracker = yield _network(base, peers=3 + args.kills)
    try:
        yield _orb(base, "keygen")
        path = yield _function_dir(base, "healer", 100 * 1024)
        out = yield _orb(base, "deploy", path, "--tracker", tracker.wire_text, "--json")
        fid = json.loads(out)["fid"]
        alive = {d.node_id: d for d in net.daemons if d.kind == "orb-peer"}
        times = []

        @defer.inlineCallbacks
        def verified():
            code, doc = yield tracker.get_json(f"/api/v1/functions/{fid}")
            return {h["node_id"] for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]}

        for _ in range(args.kills):
            hosts = yield verified()
            victim = alive.pop(next(n for n in hosts if n in alive))
            killed = time.monotonic()
            yield victim.stop(signal.SIGKILL)
            while True:
                now = yield verified()
                if len(now) >= 3 and victim.node_id not in now:
                    break
                if time.monotonic() - killed > 60:
                    raise RuntimeError("not back at 3 verified replicas within 60 s")
                yield sleep(0.05)
            times.append(time.monotonic() - killed)
        RESULTS["rereplication"] = {"seconds": times}
        return [Row(f"re-replication after SIGKILL to 3 verified (p50, worst of {len(times)})",
                    f"{_p50(times):.2f} s, {max(times):.2f} s", "-", "<= 5 s")]
    finally:
        yield net.stop_all()
        shutil.rmtree(base, ignore_errors=True)


MEASURES = {
    "deploy": measure_deploy,
    "rereplication": measure_rereplication,
    "transfer": measure_transfer,
    "hosting_memory": measure_hosting_memory,
}
RESULTS = {}


def report(rows):
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("name", "orb", "baseline")]
    print()
    print(f"{'measure':<{widths[0]}}  {'ORB':>{widths[1]}}  {'baseline (same run)':>{widths[2]}}  target")
    for r in rows:
        print(f"{r.name:<{widths[0]}}  {r.orb:>{widths[1]}}  {r.baseline:>{widths[2]}}  {r.target}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "deploy.json"), "w") as f:
        json.dump(RESULTS, f, indent=1)


@defer.inlineCallbacks
def main_async(args):
    rows = []
    for name in args.only:
        rows.extend((yield MEASURES[name](args)))
    report(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(MEASURES), help=f"measures to run, of {', '.join(MEASURES)}")
    parser.add_argument("--mib", type=int, default=50, help="transfer: package size, MiB")
    parser.add_argument("--rounds", type=int, default=3, help="transfer: rounds (the best is reported)")
    parser.add_argument("--functions", type=int, default=1000, help="hosting_memory: functions hosted")
    parser.add_argument("--deploys", type=int, default=7, help="deploy: functions deployed (p50 over them)")
    parser.add_argument("--kills", type=int, default=3, help="rereplication: hosts killed one after another")
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in MEASURES]
    if unknown:
        parser.error(f"unknown measure {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    task.react(lambda _r: main_async(args))


if __name__ == "__main__":
    main()
