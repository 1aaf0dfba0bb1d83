"""
How fast a deprecation reaches every node (issue 13): a real devnet on
loopback, two federated ``twistd orb-tracker`` and six ``twistd orb-peer``
(three homed at each tracker, each on its own 127.N.0.1), one function
hosted by every peer.

Each run:

1. ``baseline``: ``orb deploy --no-wait`` of a new version (a new fid): a
   plain federated registry change, the new function record, from the
   moment the first tracker's API lists it until every tracker's does;
2. ``deprecation``: ``orb deprecate FID --successor NEW --sunset +1h``:
   from the moment the first tracker's API (``/api/v1/functions/<fid>``
   ``deprecation``) shows it until every tracker's API and every host of
   the fid (the DEPRECATE it keeps, in its package store's SQLite file: a
   host has no HTTP API) has it. Also printed: the time from the command's
   start (which includes starting Python, the API read and the TLS
   session).

Both are measured the same way, in the same run, by polling each daemon
from the moment the command starts: the first tracker's time is the start
of the propagation, so the command's own start-up does not count.
Every daemon is polled every ``--interval`` (default 20 ms). Runs are
several (``--runs``, default 10); the figures are p50 and max, in ms.

    .venv/bin/python bench/deprecation.py [--quick] [--runs 10] [--peers 6] [--interval 0.02] [--out bench/out]

``--quick``: 2 peers, 2 runs: a smoke run that shows the bench works.
Writes ``deprecation.json`` under ``--out``. Every process it starts it
stops, on an error or Ctrl-C too.
"""

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time

from twisted.internet import defer, reactor, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from orb.devnet import Devnet, eventually  # noqa: E402

NETWORK = "bench"
HERE = os.path.dirname(os.path.abspath(__file__))
ORB = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "orb")
TIMEOUT_S = 60.0

MAIN_PY = '''\
VERSION = {version!r}  # each version is another package, so another fid


def handler(event, context):
    return event
'''

TOML = '''\
name = "deprecated"
version = "{version}"
runtime = "python"
entry = "main.py"
description = "The function of bench/deprecation.py."
timeout_ms = 5000
replicas = {replicas}

[[sample]]
name = "echo"
input = "x"
output = "x"
'''


class Children:
    """The devnet, stopped whatever happens (before reactor shutdown)."""

    def __init__(self, remove_dir=None):
        self.net = None
        self.remove_dir = remove_dir
        self._stopping = None
        reactor.addSystemEventTrigger("before", "shutdown", self.stop_all)

    def stop_all(self):
        if self._stopping is None:
            self._stopping = self.net.stop_all() if self.net is not None else defer.succeed(None)
            if self.remove_dir:
                self._stopping.addBoth(lambda r: (shutil.rmtree(self.remove_dir, ignore_errors=True), r)[1])
        return self._stopping


@defer.inlineCallbacks
def orb(base_dir, *argv):
    from twisted.internet import utils

    env = dict(os.environ, ORB_HOME=os.path.join(base_dir, "owner"), ORB_NETWORK=NETWORK)
    out, err, code = yield utils.getProcessOutputAndValue(ORB, argv, env=env)
    if code != 0:
        raise RuntimeError(f"orb {' '.join(argv[:1])} failed ({code}): {(err or out).decode()[-2000:]}")
    return json.loads(out) if "--json" in argv else out.decode()


def write_function(base_dir, version, replicas):
    path = os.path.join(base_dir, "function")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "main.py"), "w") as f:
        f.write(MAIN_PY.format(version=version))
    with open(os.path.join(path, "orb.toml"), "w") as f:
        f.write(TOML.format(version=version, replicas=replicas))
    return path


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- what each daemon reports ----------------------------------------------------------------------


def host_has_deprecation(peer, fid):
    """Whether a host keeps a deprecation of ``fid``: read from its package store's SQLite file (a host has
    no HTTP API; a reader in another process sees the daemon's committed writes)."""
    return host_deprecation(peer.data_dir, fid) is not None


def host_deprecation(data_dir, fid):
    """The DEPRECATE a host keeps for ``fid`` (its package store's ``deprecations`` table), if deprecated=1."""
    from orb.net.packages import INDEX_FILE
    from orb.protocol import fid as fidmod
    from orb.protocol import messages as m

    path = os.path.join(data_dir, INDEX_FILE)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        try:
            row = db.execute("SELECT body FROM deprecations WHERE fid = ?", (fidmod.from_text(fid),)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    message = m.decode_body(m.MessageType.DEPRECATE, bytes(row[0]))
    return message if message.deprecated else None


@defer.inlineCallbacks
def tracker_has_deprecation(tracker, fid):
    code, doc = yield tracker.get_json(f"/api/v1/functions/{fid}")
    return code == 200 and bool((doc.get("deprecation") or {}).get("deprecated"))


@defer.inlineCallbacks
def tracker_has_function(tracker, fid):
    code, _ = yield tracker.get_json(f"/api/v1/functions/{fid}")
    return code == 200


@defer.inlineCallbacks
def until_everywhere(checks, interval_s, started):
    """Poll every ``(label, check)`` every ``interval_s`` until each has said yes once: {label: seconds after
    ``started`` (time.monotonic()) at which it did}."""
    seen = {}
    deadline = started + TIMEOUT_S
    while len(seen) < len(checks):
        if time.monotonic() > deadline:
            missing = [label for label, _ in checks if label not in seen]
            raise RuntimeError(f"not everywhere after {TIMEOUT_S:g} s: {missing}")
        pending = [(label, check) for label, check in checks if label not in seen]
        results = yield defer.gatherResults([defer.maybeDeferred(check) for _, check in pending], consumeErrors=True)
        now = time.monotonic()
        for (label, _), ok in zip(pending, results):
            if ok:
                seen[label] = now - started
        if len(seen) < len(checks):
            yield task.deferLater(reactor, interval_s, lambda: None)
    return seen


# --- the run ---------------------------------------------------------------------------------------


@defer.inlineCallbacks
def measure(command, checks, interval_s, started):
    """Run ``command`` (a Deferred) while polling ``checks`` from ``started`` on: {label: seconds after
    ``started`` at which each first said yes}."""
    seen, _ = yield defer.gatherResults([until_everywhere(checks, interval_s, started), command], consumeErrors=True)
    return seen


def fid_of(path):
    """The fid `orb deploy` will deploy from ``path`` (the same build, in-process)."""
    from orb.cli import _project
    from orb.protocol import fid as fidmod

    return fidmod.to_text(_project.build(path).fid)


@defer.inlineCallbacks
def start_network(children, base_dir, peer_count):
    net = Devnet(base_dir, network=NETWORK)
    children.net = net
    trackers = yield net.start_trackers("t1", "t2")
    peers = []
    for i in range(1, peer_count + 1):
        home = trackers[(i - 1) % 2]
        peers.append((yield net.start_peer(f"p{i}", "--tracker", home.wire_text,
                                           "--listen", f"tcp:0:interface=127.{i}.0.1")))
    expected = {p.node_id for p in peers}

    @defer.inlineCallbacks
    def registered():
        for t in trackers:
            code, listing = yield t.get_json("/api/v1/peers?limit=1000")
            if not expected <= {p["node_id"] for p in listing["peers"]}:
                return False
        return True

    yield eventually(registered, timeout_s=60, what="both trackers knowing every peer")
    return net, trackers, peers


@defer.inlineCallbacks
def deploy(base_dir, tracker, version, replicas, wait):
    path = write_function(base_dir, version, replicas)
    api = f"http://127.0.0.1:{tracker.info['http']}"
    argv = ["deploy", path, "--tracker", tracker.wire_text, "--api", api, "--json"]
    if not wait:
        argv.append("--no-wait")
    doc = yield orb(base_dir, *argv)
    return doc["fid"]


@defer.inlineCallbacks
def hosts_of(tracker, fid, want):
    @defer.inlineCallbacks
    def hosted():
        code, info = yield tracker.get_json(f"/api/v1/functions/{fid}")
        hosts = [h["node_id"] for h in info.get("hosts", []) if h["verified"] and h["live"] and not h["is_tracker"]]
        return hosts if len(hosts) >= want else None

    return (yield eventually(hosted, timeout_s=120, what=f"{want} verified replicas"))


def figures(values):
    return {"p50_ms": round(percentile(values, 0.5) * 1000, 1), "max_ms": round(max(values) * 1000, 1),
            "runs": len(values)}


@defer.inlineCallbacks
def run(args):
    base_dir = args.work_dir or tempfile.mkdtemp(prefix="orb-bench-deprecation-")
    os.makedirs(base_dir, exist_ok=True)
    children = Children(remove_dir=None if args.work_dir else base_dir)
    try:
        print(f"devnet: 2 trackers, {args.peers} peers, in {base_dir}", flush=True)
        net, trackers, peers = yield start_network(children, base_dir, args.peers)
        yield orb(base_dir, "keygen")
        by_id = {p.node_id: p for p in peers}
        current = yield deploy(base_dir, trackers[0], "1.0.0", args.peers, wait=True)
        hosts = yield hosts_of(trackers[0], current, args.peers)
        print(f"deployed {current[:16]}... on {len(hosts)} hosts", flush=True)
        results = {"baseline": [], "deprecation": [], "deprecation_from_start": [], "per_node": []}
        for run_no in range(1, args.runs + 1):
            # Baseline: a new version's function record, from the first tracker to every tracker.
            new = fid_of(write_function(base_dir, f"1.0.{run_no}", args.peers))
            started = time.monotonic()
            command = deploy(base_dir, trackers[0], f"1.0.{run_no}", args.peers, wait=False)
            seen = yield measure(command, [(f"tracker {i + 1}", lambda t=t: tracker_has_function(t, new))
                                           for i, t in enumerate(trackers)], args.interval, started)
            baseline = max(seen.values()) - seen["tracker 1"]
            results["baseline"].append(baseline)
            # The new version must be hosted before it can be a successor people call; wait, unmeasured.
            yield hosts_of(trackers[0], new, args.peers)
            # The deprecation of the current version, from the first tracker to every tracker and host.
            api = f"http://127.0.0.1:{trackers[0].info['http']}"
            started = time.monotonic()
            command = orb(base_dir, "deprecate", current, "--successor", new, "--sunset", "+1h", "--tracker",
                          trackers[0].wire_text, "--api", api, "--json")
            checks = [(f"tracker {i + 1}", lambda t=t: tracker_has_deprecation(t, current))
                      for i, t in enumerate(trackers)]
            checks += [(f"host {os.path.basename(by_id[h].data_dir)}", lambda p=by_id[h]: host_has_deprecation(p, current))
                       for h in hosts if h in by_id]
            seen = yield measure(command, checks, args.interval, started)
            everywhere = max(seen.values()) - seen["tracker 1"]
            results["deprecation"].append(everywhere)
            results["deprecation_from_start"].append(max(seen.values()))
            results["per_node"].append({k: round((v - seen["tracker 1"]) * 1000, 1) for k, v in sorted(seen.items())})
            print(f"  run {run_no}: baseline (function record, first tracker -> every tracker) {baseline * 1000:7.1f} ms"
                  f"   deprecation (first tracker -> every tracker and host) {everywhere * 1000:7.1f} ms "
                  f"(from `orb deprecate` starting {max(seen.values()) * 1000:7.1f} ms)", flush=True)
            current, hosts = new, (yield hosts_of(trackers[0], new, args.peers))
        summary = {k: figures(results[k]) for k in ("baseline", "deprecation", "deprecation_from_start")}
        print()
        print(f"{'':<44}{'p50':>10}{'max':>10}")
        for key, label in (("baseline", "function record -> every tracker (baseline)"),
                           ("deprecation", "deprecation -> every tracker and host"),
                           ("deprecation_from_start", "  the same, from `orb deprecate` starting")):
            print(f"{label:<44}{summary[key]['p50_ms']:>8.1f}ms{summary[key]['max_ms']:>8.1f}ms")
        print(f"({args.runs} runs, 2 trackers, {args.peers} hosts, polled every {args.interval * 1000:g} ms)")
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "deprecation.json"), "w") as f:
            json.dump({"args": {"peers": args.peers, "runs": args.runs, "interval_s": args.interval},
                       "summary": summary, "runs": results}, f, indent=2, sort_keys=True)
    finally:
        yield children.stop_all()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 peers, 2 runs")
    parser.add_argument("--runs", type=int, help="runs (default 10; --quick 2)")
    parser.add_argument("--peers", type=int, help="hosting peers, homed alternately at the two trackers "
                                                  "(default 6; --quick 2)")
    parser.add_argument("--interval", type=float, default=0.02, help="poll interval in seconds (default 0.02)")
    parser.add_argument("--work-dir", help="daemons' data dirs here, kept after the run (default: a temporary dir)")
    parser.add_argument("--out", default=os.path.join(HERE, "out"), help="output dir (default bench/out)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (2 if args.quick else 10)
    args.peers = args.peers or (2 if args.quick else 6)
    if not 1 <= args.peers <= 200 or not 1 <= args.runs <= 1000 or not 0.001 <= args.interval <= 5:
        parser.error("--peers 1..200, --runs 1..1000, --interval 0.001..5")
    outcome = {}

    def go():
        d = run(args)
        d.addBoth(lambda r: (outcome.setdefault("r", r), reactor.stop()))

    reactor.callWhenRunning(go)
    reactor.run()
    result = outcome.get("r")
    if hasattr(result, "raiseException"):
        result.printTraceback()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
