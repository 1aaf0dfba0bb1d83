"""
The `.orb` DNS of a tracker (issue 12) against NSD serving equivalent
records, measured with dnsperf in the same run, for two query mixes:

- ``A``: ``<fid>.orb A`` over the deployed functions;
- ``SRV``: ``_orb._tcp.<fid>.orb SRV`` (answers carry the targets' A records
  in the additional section).

Servers, each its own process on a loopback port:

- ``orb``: a ``twistd orb-tracker --dns 127.0.0.1:PORT`` with a few peers
  and deployed functions (the devnet is started as orb/demo.py and
  bench/deploy.py start theirs), or any DNS server given with
  ``--target HOST:PORT --fid FID ...``;
- ``nsd``: NSD, unprivileged port, generated config and zone,
  ``rrl-ratelimit: 0``;
- ``names``: plain twisted.names (``authority.BindAuthority`` +
  ``server.DNSServerFactory``) loading the same zone file, with one addition:
  SRV targets' addresses in the additional section, as NSD and the tracker
  give them (twisted.names adds them for CNAME, MX and NS only).

The records NSD and twisted.names serve are copied from the ORB server's own
answers (every answer and additional record of both queries, per fid), so
all three send the same records; without an ORB server (the tracker has no
``--dns`` yet, or ``--no-devnet``) they are taken from the tracker's REST API
or made up (``--no-devnet``), and the ORB row is left out.

Per server and mix: QPS from a dnsperf run at saturation (``--outstanding``
queries in flight, ``--seconds`` long, no ``-v``); p50/p99 latency from a
second dnsperf run at a fixed ``--latency-qps`` with ``-v`` (each answer's
latency; dnsperf 2.10 has no histogram). Servers are measured in turns, the
order reversed each round (ABBA), so the load other work puts on this
2-core machine falls on all of them alike; QPS is the median over rounds,
and a server's ratio to NSD is the median of each round's ratio (two runs
seconds apart, under about the same load).
Target (issue 12): ORB >= 0.25x NSD's QPS. Figures are printed with each
server's ratio to NSD and written to bench/out/dns.csv. Every process the
bench starts is stopped before it exits.

    .venv/bin/python bench/dns.py [--rounds 3 --seconds 5] [--functions 3 --peers 3]
    .venv/bin/python bench/dns.py --target 127.0.0.1:5353 --fid FID [--fid FID ...]
    .venv/bin/python bench/dns.py --no-devnet --functions 3     # NSD vs twisted.names only
    .venv/bin/python bench/dns.py --with-orb-target names       # the ORB row measured on twisted.names (a dry run)
"""

import argparse
import base64
import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task, threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NETWORK = "bench"
DNSPERF = shutil.which("dnsperf") or "/usr/bin/dnsperf"
NSD = shutil.which("nsd") or "/usr/sbin/nsd"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
ORB = os.path.join(os.path.dirname(sys.executable), "orb")
OUT = os.path.join(ROOT, "bench", "out")
TTL_S = 10
QUERY_TYPES = {"A": 1, "SRV": 33}


def _load_iot():
    """The example IoT client's DNS code (hand-built queries), used to copy the ORB server's answers."""
    spec = importlib.util.spec_from_file_location("orb_iot", os.path.join(ROOT, "examples", "iot", "orb_iot.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


iot = _load_iot()


# --- the tracker's --dns option: one place to change if the option's form changes on merge -----------


def tracker_dns_args(port):
    return ["--dns", f"127.0.0.1:{port}", "--dns-rrl", "0"]  # rrl 0: as NSD's rrl-ratelimit: 0


def tracker_has_dns():
    """Whether this tree's tracker takes --dns (the `dns` branch, issue 12)."""
    out = subprocess.run([TWISTD, "orb-tracker", "--help"], capture_output=True, text=True, timeout=60)
    return re.search(r"^\s+--dns[= ]", out.stdout, re.M) is not None


# --- ports and processes ------------------------------------------------------------------------------


def free_port():
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def wait_answering(server, name="orb", qtype=6, timeout_s=20.0):
    """Wait until ``server`` answers a DNS query (any rcode)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            iot.parse_message(iot.udp_exchange(server, iot.build_query(1, name, qtype), 0.5))
            return
        except iot.DNSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no DNS server answering at {server[0]}:{server[1]}") from None
            time.sleep(0.1)


class Child:
    """A server process started by the bench, stopped (SIGTERM, then SIGKILL) by ``stop``."""

    def __init__(self, name, argv, log_path, registry, **kw):
        self.name = name
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=kw.pop("stdout", self.log), stderr=self.log, **kw)
        registry.append(self)  # at once: whoever cleans up stops it even if starting fails later

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


NSD_CONF = """\
server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{dir}"
  database: ""
  pidfile: "{dir}/nsd.pid"
  xfrdfile: "{dir}/xfrd.state"
  zonelistfile: "{dir}/zone.list"
  server-count: 1
  verbosity: 0
  hide-version: yes
  rrl-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "orb"
  zonefile: "{zone}"
"""


def start_nsd(workdir, zone_path, registry):
    """NSD on a loopback port, one server process (the tracker is one process too), no rate limit."""
    port = free_port()
    d = os.path.join(workdir, "nsd")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nsd.conf")
    with open(conf, "w") as f:
        f.write(NSD_CONF.format(port=port, dir=d, zone=zone_path))
    child = Child("nsd", [NSD, "-d", "-c", conf], os.path.join(d, "nsd.log"), registry)
    wait_answering(("127.0.0.1", port))
    return child, ("127.0.0.1", port)


def start_names(workdir, zone_path, registry):
    """Plain twisted.names serving the zone file, in its own process; it prints its port."""
    log = os.path.join(workdir, "names.log")
    child = Child("names", [sys.executable, os.path.abspath(__file__), "--serve-names", zone_path], log, registry,
                  stdout=subprocess.PIPE)
    line = child.proc.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"twisted.names baseline did not start: {open(log).read()[-2000:]}")
    server = ("127.0.0.1", int(line))
    wait_answering(server)
    return child, server


def serve_names(zone_path):
    """The twisted.names baseline (run as a child: bench/dns.py --serve-names ZONE)."""
    from twisted.internet import reactor
    from twisted.names import authority, dns, server

    class Authority(authority.BindAuthority):
        def _additionalRecords(self, answer, auth, ttl):
            yield from authority.BindAuthority._additionalRecords(self, answer, auth, ttl)
            for record in answer + auth:
                if record.type == dns.SRV:
                    # BindAuthority keeps the zone file's trailing dot on SRV targets (not on owner names)
                    target = record.payload.target.name.rstrip(b".")
                    for rec in self.records.get(target.lower(), ()):
                        if rec.TYPE in self._ADDRESS_TYPES:
                            yield dns.RRHeader(target, rec.TYPE, dns.IN, rec.ttl or ttl, rec, auth=True)

    factory = server.DNSServerFactory(authorities=[Authority(zone_path)])
    udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    port = udp.getHost().port
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(port, flush=True)
    reactor.run()


# --- records: copied from the ORB server, or from the REST API, or made up -----------------------------


def _rr_text(r):
    """One zone-file line for a record decoded by the IoT client, absolute names."""
    if r.type == 1:
        return f"{r.name}. {r.ttl} IN A {r.data}"
    if r.type == 28:
        return f"{r.name}. {r.ttl} IN AAAA {r.data}"
    if r.type == 33:
        pri, weight, port, target = r.data
        return f"{r.name}. {r.ttl} IN SRV {pri} {weight} {port} {target}."
    if r.type == 16:
        return f"{r.name}. {r.ttl} IN TXT " + " ".join('"' + s.decode().replace('"', '\\"') + '"' for s in r.data)
    return None


def records_from_server(server, fids):
    """Every answer and additional record the server gives for each fid's A and SRV queries."""
    lines = []
    for fid in fids:
        for name, qtype in ((f"{fid}.orb", 1), (f"_orb._tcp.{fid}.orb", 33), (f"{fid}.orb", 16)):
            try:
                msg, _ = iot.dns_query(server, name, qtype, 3.0)
            except iot.DNSError as e:
                if qtype == 16:
                    continue
                raise RuntimeError(f"{name}: {e}") from None
            for r in msg.answers + msg.additional:
                text = _rr_text(r)
                if text and text not in lines:
                    lines.append(text)
    return lines


def records_from_api(api_doc_by_fid, tracker_ip="127.0.0.1"):
    """What the tracker would serve, built from /api/v1/functions/<fid>: the A of <fid>.orb is the
    tracker's gateway address; SRV lists the verified live peer hosts in the API's order."""
    lines = []
    for fid, doc in api_doc_by_fid.items():
        lines.append(f"{fid}.orb. {TTL_S} IN A {tracker_ip}")
        hosts = [h for h in doc["hosts"] if h["live"] and not h["is_tracker"] and h["address"]]
        for i, h in enumerate(hosts):
            target = f"{h['node_id'][:16]}.{fid}.orb"
            lines.append(f"_orb._tcp.{fid}.orb. {TTL_S} IN SRV {10 * (i + 1)} {1000 - (h['load_permille'] or 0)} "
                         f"{h['address']['port']} {target}.")
            lines.append(f"{target}. {TTL_S} IN A {h['address']['ip']}")
    return lines


def made_up_records(count, hosts=3):
    """``count`` fids (of made-up packages), each with 3 peers on 127.N.0.1."""
    lines, fids = [], []
    for i in range(count):
        raw = b"\x01" + hashlib.sha256(f"bench-dns-{i}".encode()).digest()
        fid = base64.b32encode(raw).decode().lower().rstrip("=")
        fids.append(fid)
        lines.append(f"{fid}.orb. {TTL_S} IN A 127.0.0.1")
        for h in range(1, hosts + 1):
            target = f"p{h}.{fid}.orb"
            lines.append(f"_orb._tcp.{fid}.orb. {TTL_S} IN SRV {10 * h} 500 {7400 + h} {target}.")
            lines.append(f"{target}. {TTL_S} IN A 127.{h}.0.1")
    return fids, lines


def write_zone(path, lines):
    with open(path, "w") as f:
        f.write("$ORIGIN orb.\n$TTL 10\n")
        f.write("@ 10 IN SOA ns.orb. hostmaster.orb. 1 60 60 600 5\n")
        f.write("\n".join(lines) + "\n")


def answers(server, name, qtype):
    """The set of answer and additional records a server gives, for the equivalence check."""
    msg, _ = iot.dns_query(server, name, qtype, 3.0)
    return sorted(_rr_text(r) for r in msg.answers + msg.additional if _rr_text(r))


# --- dnsperf -------------------------------------------------------------------------------------------


def dnsperf(server, mix_path, seconds, outstanding, clients, verbose=False, max_qps=None):
    argv = [DNSPERF, "-s", server[0], "-p", str(server[1]), "-d", mix_path, "-l", str(seconds),
            "-q", str(outstanding), "-c", str(clients), "-T", "1", "-t", "2"]
    if max_qps:
        argv += ["-Q", str(max_qps)]
    if verbose:
        argv.append("-v")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    stats = {
        "sent": _grab(r"Queries sent:\s+(\d+)", out, int),
        "completed": _grab(r"Queries completed:\s+(\d+)", out, int),
        "lost": _grab(r"Queries lost:\s+(\d+)", out, int),
        "qps": _grab(r"Queries per second:\s+([\d.]+)", out, float),
        "avg_ms": _grab(r"Average Latency \(s\):\s+([\d.]+)", out, float) * 1000,
        "noerror": _grab(r"NOERROR (\d+)", out, int, 0),
    }
    if verbose:
        lat = sorted(float(x) * 1000 for x in re.findall(r"^> \w+ \S+ \S+ ([\d.]+)$", out, re.M))
        stats["p50_ms"] = _pct(lat, 50)
        stats["p99_ms"] = _pct(lat, 99)
        stats["samples"] = len(lat)
    return stats


def _grab(pattern, text, kind, default=None):
    m = re.search(pattern, text)
    if m is None:
        if default is not None:
            return default
        raise RuntimeError(f"dnsperf output without {pattern!r}:\n{text[-1500:]}")
    return kind(m.group(1))


def _pct(values, p):
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- the devnet (ORB side) ------------------------------------------------------------------------------


@defer.inlineCallbacks
def start_devnet(workdir, args, with_dns, registry):
    """A tracker (with --dns when it has it) and ``args.peers`` peers, each on its own 127.N.0.1, and
    ``args.functions`` functions deployed with the real `orb deploy`, as bench/deploy.py does.
    Fires with (devnet, the tracker's DNS server or None, {fid: /api/v1/functions/<fid>})."""
    from twisted.internet import utils

    from orb.devnet import Devnet, sleep

    net = Devnet(workdir, network=NETWORK)
    registry.append(net)  # its daemons are stopped by whoever cleans up, even if this fails half-way
    dns_port = free_port() if with_dns else None
    tracker = yield net.start_tracker("t1", *(tracker_dns_args(dns_port) if with_dns else []))
    for i in range(1, args.peers + 1):
        yield net.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", tracker.wire_text)
    yield sleep(2)
    env = dict(os.environ, ORB_HOME=os.path.join(workdir, "owner"), ORB_NETWORK=NETWORK)

    @defer.inlineCallbacks
    def orb(*argv):
        out, err, code = yield utils.getProcessOutputAndValue(ORB, argv, env=env)
        if code:
            raise RuntimeError(f"orb {argv[0]} exited {code}: {(err or out).decode()[-800:]}")
        return out.decode()

    yield orb("keygen")
    docs = {}
    for i in range(args.functions):
        path = os.path.join(workdir, f"fn{i}")
        yield orb("init", path, "--template", "python", "--name", f"fn{i}")  # a distinct name: a distinct fid
        done = json.loads((yield orb("deploy", path, "--tracker", tracker.wire_text, "--json")))
        _, doc = yield tracker.get_json(f"/api/v1/functions/{done['fid']}")
        docs[done["fid"]] = doc
    return net, (("127.0.0.1", dns_port) if with_dns else None), docs


# --- the run --------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", metavar="HOST:PORT", help="the ORB DNS server to measure (skips the devnet)")
    parser.add_argument("--fid", action="append", default=[], help="with --target: a fid it serves (repeatable)")
    parser.add_argument("--no-devnet", action="store_true", help="no ORB server: NSD and twisted.names only")
    parser.add_argument("--with-orb-target", choices=["names"], help="dry run: measure the ORB row on the "
                        "twisted.names baseline (checks the ORB path without a tracker that has --dns)")
    parser.add_argument("--functions", type=int, default=3, help="functions deployed (or made up)")
    parser.add_argument("--peers", type=int, default=3, help="peers in the devnet")
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds, order reversed each round")
    parser.add_argument("--seconds", type=int, default=5, help="length of each dnsperf run")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q: queries in flight at saturation")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c: client sockets")
    parser.add_argument("--latency-qps", type=int, default=2000, help="the offered rate of the latency runs")
    parser.add_argument("--serve-names", metavar="ZONE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_names:
        return serve_names(args.serve_names)
    if args.target and not args.fid:
        parser.error("--target needs at least one --fid")
    for tool in (DNSPERF, NSD):
        if not os.path.exists(tool):
            parser.error(f"{tool} not found: apt-get install dnsperf nsd")
    # The reactor runs throughout, so that the devnet's daemons' output is read while dnsperf runs;
    # the blocking steps (DNS queries, dnsperf, NSD) run in threads.
    task.react(lambda _reactor: run(args))


def blocking(f, *a, **kw):
    return threads.deferToThread(f, *a, **kw)


@defer.inlineCallbacks
def run(args):
    from twisted.internet import reactor

    workdir = tempfile.mkdtemp(prefix="orb-bench-dns-")
    children, nets = [], []

    def cleanup():
        """Stop every process this run started; also run at reactor shutdown (Ctrl-C)."""
        while children:
            children.pop().stop()
        stopping = [nets.pop().stop_all() for _ in list(nets)]
        d = defer.DeferredList(stopping, consumeErrors=True)
        d.addBoth(lambda _: shutil.rmtree(workdir, ignore_errors=True))
        return d

    trigger = reactor.addSystemEventTrigger("before", "shutdown", cleanup)
    load_start = os.getloadavg()[0]
    try:
        orb_server, source = None, ""
        if args.target:
            orb_server = iot.host_port(args.target)
            fids = args.fid
            lines = yield blocking(records_from_server, orb_server, fids)
            source = f"copied from {args.target}"
        elif args.no_devnet or args.with_orb_target:
            fids, lines = made_up_records(args.functions)
            source = "made up (no devnet)"
        else:
            with_dns = yield blocking(tracker_has_dns)
            print(f"starting a devnet: a tracker{' with --dns' if with_dns else ''}, {args.peers} peers, "
                  f"{args.functions} functions deployed ...", flush=True)
            _, orb_server, docs = yield start_devnet(os.path.join(workdir, "devnet"), args, with_dns, nets)
            fids = list(docs)
            if orb_server is not None:
                yield blocking(wait_answering, orb_server)
                lines = yield blocking(records_from_server, orb_server, fids)
                source = "copied from the tracker's DNS answers"
            else:
                lines = records_from_api(docs)
                source = "from the tracker's REST API (this tracker has no --dns: the ORB row is left out)"
        zone = os.path.join(workdir, "orb.zone")
        write_zone(zone, lines)
        mixes = {}
        for mix in ("A", "SRV"):
            path = os.path.join(workdir, f"mix-{mix}.txt")
            with open(path, "w") as f:
                for fid in fids:
                    f.write(f"{fid}.orb A\n" if mix == "A" else f"_orb._tcp.{fid}.orb SRV\n")
            mixes[mix] = path

        _, nsd_server = yield blocking(start_nsd, workdir, zone, children)
        _, names_server = yield blocking(start_names, workdir, zone, children)
        servers = {"nsd": nsd_server, "names": names_server}
        if args.with_orb_target == "names":
            orb_server = names_server
            source += "; the ORB row is measured on the twisted.names baseline (dry run)"
        if orb_server is not None:
            servers = {"orb": orb_server, **servers}
        print(f"records ({len(lines)}, {len(fids)} fids): {source}")
        for name, server in servers.items():
            same = yield blocking(lambda server=server: all(
                answers(server, q, t) == answers(nsd_server, q, t)
                for fid in fids for q, t in ((f"{fid}.orb", 1), (f"_orb._tcp.{fid}.orb", 33))))
            print(f"  {name:6s} at {server[0]}:{server[1]}: answers {'the same records as NSD' if same else 'DIFFER'}")

        results = {(s, mix): [] for s in servers for mix in mixes}
        order = list(servers)
        for rnd in range(args.rounds):
            for mix, path in mixes.items():
                for s in order if rnd % 2 == 0 else list(reversed(order)):
                    stats = yield blocking(dnsperf, servers[s], path, args.seconds, args.outstanding, args.clients)
                    lat = yield blocking(dnsperf, servers[s], path, max(2, args.seconds // 2), args.outstanding,
                                         args.clients, verbose=True, max_qps=args.latency_qps)
                    stats.update(p50_ms=lat["p50_ms"], p99_ms=lat["p99_ms"], latency_samples=lat["samples"],
                                 latency_lost=lat["lost"])
                    results[(s, mix)].append(stats)
                    print(f"  round {rnd + 1} {mix:3s} {s:6s} {stats['qps']:9.0f} q/s  lost {stats['lost']}  "
                          f"p50 {stats['p50_ms']:.3f} ms  p99 {stats['p99_ms']:.3f} ms", flush=True)
        load_end = os.getloadavg()[0]

        rows = []
        run_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for mix in mixes:
            nsd_rounds = [r["qps"] for r in results[("nsd", mix)]]
            for s in servers:
                rs = results[(s, mix)]
                qps = statistics.median(r["qps"] for r in rs)
                # each round's ratio pairs two runs seconds apart, under the same load from other work
                ratios = [r["qps"] / n for r, n in zip(rs, nsd_rounds)]
                rows.append({
                    "run_at": run_at, "mix": mix, "server": s, "rounds": len(rs), "qps": round(qps),
                    "ratio_to_nsd": round(statistics.median(ratios), 3),
                    "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                    "p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 3),
                    "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 3),
                    "avg_ms_at_saturation": round(statistics.median(r["avg_ms"] for r in rs), 3),
                    "lost": sum(r["lost"] for r in rs) + sum(r["latency_lost"] for r in rs),
                    "outstanding": args.outstanding, "latency_qps": args.latency_qps, "seconds": args.seconds,
                    "fids": len(fids), "records": source, "load_start": round(load_start, 2),
                    "load_end": round(load_end, 2),
                })
        report(rows, servers, args, load_start, load_end)
    finally:
        reactor.removeSystemEventTrigger(trigger)
        yield cleanup()


LABELS = {"orb": "ORB tracker", "nsd": "NSD", "names": "twisted.names"}


def report(rows, servers, args, load_start, load_end):
    print()
    print(f"dnsperf: {args.seconds} s runs, {args.outstanding} in flight, {args.clients} clients, "
          f"{args.rounds} rounds; latency at {args.latency_qps} q/s; load average {load_start:.2f} -> {load_end:.2f}")
    print("QPS: median over rounds; x NSD: median of each round's ratio to NSD's run of that round (min-max)")
    print(f"{'mix':4s} {'server':14s} {'QPS':>9s} {'x NSD':>6s} {'(min-max)':>11s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'avg ms (sat.)':>13s} {'lost':>5s}")
    for r in rows:
        spread = f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"
        print(f"{r['mix']:4s} {LABELS[r['server']]:14s} {r['qps']:9d} {r['ratio_to_nsd']:6.2f} {spread:>11s} "
              f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['avg_ms_at_saturation']:13.3f} {r['lost']:5d}")
    if "orb" in servers:
        worst = min(r["ratio_to_nsd"] for r in rows if r["server"] == "orb")
        print(f"target: ORB QPS >= 0.25x NSD's: {'met' if worst >= 0.25 else 'NOT met'} (worst mix {worst:.2f}x)")
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "dns.csv")
    if os.path.exists(path):
        with open(path) as f:
            if f.readline().strip() != ",".join(rows[0]):  # written by an older version: keep it aside
                os.replace(path, path + f".{int(os.path.getmtime(path))}")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    print(f"appended to {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
