# -*- test-case-name: tests.test_demo -*-
"""
The main job on the embedded default, in acts, with fresh keys in a
throwaway data dir and everything on loopback:

1. the wire: a tracker and a peer complete a TLS 1.3 handshake, exchange
   PING/PONG and GETADDR/ADDR, and every frame is printed as a readable
   transcript;
2. a devnet: two ``twistd orb-tracker`` (with ``.orb`` DNS) and four
   ``twistd orb-peer`` daemons start, federate and discover each other,
   and the registry is read back from the trackers' REST API;
3. a function: ``orb deploy`` sends a real function to the devnet, which
   test-runs it, places 3 verified replicas in 3 network groups, and puts
   one back within seconds when a host is killed;
4. its name: ``dig`` asks a tracker's DNS for ``<fid>.orb`` A and TXT,
   ``_orb._tcp.<fid>.orb`` SRV and ``seed.orb``;
5. calls: ``curl`` through the gateway (printed in full), ``orb invoke
   --wire`` through a tracker, ``orb invoke --direct`` to the replica DNS
   SRV chose; a peer behind NAT (``--no-listen``) joins, the replica that
   answered first is killed, the call is made again, the NAT peer takes
   the replica's place and answers a call; a table of every call's route,
   replica, latency breakdown and result. Every daemon is stopped at the
   end, unless ``--keep`` leaves the devnet up with lines to paste;
6. names and versions: ``orb name`` gives the function a name, ``curl``
   calls it by name, ``orb update`` deploys a second version and moves the
   name, ``orb deprecate`` retires the first with a successor and a sunset
   a few seconds ahead: its answers carry Deprecation, Sunset and Link,
   DNS TXT says so, and past the sunset it answers 410 and NXDOMAIN while
   the name serves the new version; ``orb info NAME`` shows the history;
7. a private function: ``visibility = "private"``, a secret sealed to its
   hosts with ``orb secret set`` (the function reads it from
   ``context.secrets``); ``curl`` without a token gets 401, and with a token
   from ``orb grant`` in ``Authorization: Bearer`` it answers;
8. the jail: a function runs in the executor every peer uses (seccomp,
   Landlock, rlimits, namespaces, zygote warm starts), and so does one
   that tries to open a socket.

    python -m orb.demo [--data-dir DIR] [--network NAME] [--peers N] [--keep]
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile

from rich.console import Console
from twisted.internet import defer, endpoints, task, utils
from twisted.internet.task import react

from rich.table import Table

from orb.devnet import Devnet, chain_url, eventually, send_ether, sleep
from orb.identity import NodeKey
from orb.protocol import messages as m
from orb.net.adapter import OrbFactory, SessionHandler
from orb.protocol.codes import Role
from orb.protocol.session import LocalIdentity, SessionConfig
from orb.net.tls import NodeTLS
from orb.transcript import Transcript, frame_line


class DemoTracker(SessionHandler):
    """Answers GETADDR with the addresses it knows: itself and its peers."""

    def __init__(self, clock, key, listen):
        self.clock = clock
        self.key = key
        self.listen = listen
        self.sessions = []

    def session_ready(self, protocol):
        self.sessions.append(protocol)

    def message_received(self, protocol, message, request_id):
        if isinstance(message, m.GetAddr):
            now = int(self.clock.seconds())
            entries = [m.AddrEntry(now, self.listen.host, self.listen.port, int(Role.TRACKER), self.key.node_id)]
            for s in self.sessions:
                remote = s.remote
                for ep in remote.listen:
                    entries.append(m.AddrEntry(now, ep.host, ep.port, remote.roles, remote.node_id))
            protocol.send(m.Addr(entries=entries), response_to=request_id)


class DemoPeer(SessionHandler):
    def __init__(self):
        self.ready = defer.Deferred()

    def session_ready(self, protocol):
        self.ready.callback(protocol)


@defer.inlineCallbacks
def run(reactor, data_dir, network, console):
    config = SessionConfig(network=network)
    tracker_key = NodeKey.load_or_create(os.path.join(data_dir, "tracker"))
    peer_key = NodeKey.load_or_create(os.path.join(data_dir, "peer"))
    names = {}

    def sink(label, direction, frame):
        arrow = "->" if direction == "tx" else "<-"
        who = names[label]
        console.print(f"[dim]{reactor.seconds() - started:7.3f}s[/] [bold]{who}[/] {arrow} {frame_line(frame)}",
                      highlight=False, soft_wrap=True)

    started = reactor.seconds()
    transcript = Transcript(config.magic, sink)

    def observer(label):
        return lambda protocol, direction, data: transcript.observe(label, direction, data)

    names["tracker"] = "tracker"
    names["peer"] = "peer   "

    tracker_handler = DemoTracker(reactor, tracker_key, m.Endpoint("127.0.0.1", 0))
    tracker_factory = OrbFactory(
        LocalIdentity(tracker_key.public_bytes, int(Role.TRACKER | Role.RELAY), user_agent="orb-tracker/0.1"),
        tracker_handler, reactor, initiator=False, config=config, observer=observer("tracker"),
    )
    port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        NodeTLS(tracker_key).wrap(tracker_factory, is_client=False)
    )
    tracker_port = port.getHost().port
    tracker_handler.listen = m.Endpoint("127.0.0.1", tracker_port)
    console.print(f"[bold]tracker[/] {tracker_key.node_id.hex()[:16]} listening on 127.0.0.1:{tracker_port} "
                  f"(network {network}, magic {config.magic.hex()})")
    console.print(f"[bold]peer[/]    {peer_key.node_id.hex()[:16]} dialling it over TLS 1.3\n")

    peer_handler = DemoPeer()
    peer_factory = OrbFactory(
        LocalIdentity(peer_key.public_bytes, int(Role.PEER), listen=(m.Endpoint("127.0.0.1", 7401),),
                      user_agent="orb-peer/0.1"),
        peer_handler, reactor, initiator=True, config=config, observer=observer("peer"),
        expected_node_id=tracker_key.node_id,
    )
    protocol = yield endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", tracker_port, timeout=5).connect(
        NodeTLS(peer_key).wrap(peer_factory, is_client=True)
    )
    try:
        session = yield peer_handler.ready
        remote = session.remote
        tls_version = session.transport.getHandle().get_protocol_version_name()
        console.print(
            f"\n[green]handshake complete[/]: {tls_version}, certificate key bound to node id "
            f"{remote.node_id.hex()[:16]}, version {remote.version}, features 0x{remote.features:x}, "
            f"the tracker sees us at {remote.observed_us.host}:{remote.observed_us.port}\n"
        )
        session.ping()
        while session.rtt_ms is None:
            yield task.deferLater(reactor, 0.005, lambda: None)
        addr = yield session.request(m.GetAddr(), timeout_s=5)
        console.print(f"\n[green]RTT[/] {session.rtt_ms:.2f} ms; [green]ADDR[/] returned {len(addr.entries)} "
                      f"address(es): " + ", ".join(f"{e.host}:{e.port}" for e in addr.entries))
        session.close("demo finished")
        yield task.deferLater(reactor, 0.05, lambda: None)
    finally:
        protocol.transport.loseConnection()
        yield port.stopListening()


@defer.inlineCallbacks
def run_devnet(reactor, base_dir, network, peer_count, console, keep=False):
    console.rule("[bold]a local devnet of real daemons")
    net = Devnet(base_dir, network=network)
    started = reactor.seconds()
    try:
        chain = yield net.start_chain()
        url = chain_url(chain)
        console.print(f"[bold]chain[/]      twistd orb-chain (eth-tester, py-evm) at {url}  OrbEscrow "
                      f"{chain.info['escrow']}", highlight=False)
        # Every peer is paid to its wallet (DATA-DIR/private/wallet.json, made at start) and claims on its own:
        # short periods and a 1-wei threshold, so that the payments act does not wait.
        net.peer_args = ("--eth-rpc", url, "--claim-threshold-wei", "1", "--claim-every", str(CLAIM_EVERY_S),
                         "--voucher-ask-every", str(VOUCHER_ASK_EVERY_S))
        t1, t2 = yield net.start_trackers("tracker-1", "tracker-2", args=("--dns", "127.0.0.1:0", "--eth-rpc", url))
        trackers = (t1, t2)
        for t in trackers:
            console.print(f"[bold]{t.data_dir.rsplit('/', 1)[-1]}[/] {t.node_id[:16]}  wire {t.wire_text}  "
                          f"http://127.0.0.1:{t.info['http']}/", highlight=False)
        peers = []
        for i in range(peer_count):
            home = trackers[i % 2]
            # Each peer on its own 127.N.0.1: its own /16, so replicas spread as over real networks.
            peer = yield net.start_peer(f"peer-{i + 1}", "--tracker", home.wire_text, "--outbound-peers", "4",
                                        "--listen", f"tcp:0:interface=127.{i + 1}.0.1")
            peers.append(peer)
            yield fund_peer_wallet(chain, peer)
            console.print(f"[bold]peer-{i + 1}[/]    {peer.node_id[:16]}  wire {peer.wire_text}  joins via "
                          f"{home.wire_text}", highlight=False)
        expected = {p.node_id for p in peers}

        @defer.inlineCallbacks
        def converged():
            views = []
            for t in trackers:
                code, listing = yield t.get_json("/api/v1/peers")
                if {p["node_id"] for p in listing["peers"]} != expected:
                    return None
                if any(p["reachability"] != "reachable" or p["rtt_ms"] is None for p in listing["peers"]):
                    return None
                views.append(listing)
            return views

        views = yield eventually(converged, timeout_s=45, what="both trackers know every peer")
        console.print(f"\n[green]converged[/] in {reactor.seconds() - started:.1f} s: both trackers list all "
                      f"{peer_count} peers (federation), each dialled back as reachable\n")
        names = {t.node_id: n for n, t in (("tracker-1", t1), ("tracker-2", t2))}
        names.update({p.node_id: f"peer-{i + 1}" for i, p in enumerate(peers)})
        table = Table(title="registry at tracker-2 (GET /api/v1/peers)")
        for column in ("peer", "node id", "home tracker", "reachability", "address", "rtt ms"):
            table.add_column(column, no_wrap=True)
        for p in sorted(views[1]["peers"], key=lambda p: names[p["node_id"]]):
            address = ", ".join(f"{a['ip']}:{a['port']}" for a in p["addresses"])
            rtt = "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.2f}"
            table.add_row(names[p["node_id"]], p["node_id"][:8], names.get(p["home"], p["home"][:16]),
                          p["reachability"], address, rtt)
        console.print(table)
        code, stats = yield t1.get_json("/api/v1/stats")
        received = sum(stats["messages"]["in"].values())
        sent = sum(stats["messages"]["out"].values())
        console.print(f"tracker-1 counted {received} frames in and {sent} out so far.")
        fid = yield deploy_act(reactor, base_dir, network, t1, t2, peers, names, console)
        dns = yield dns_port(t1)
        yield dns_act(dns, fid, console)
        yield invoke_act(reactor, base_dir, network, net, t1, t2, peers, names, fid, dns, console)
        fid = yield names_act(reactor, base_dir, network, t1, fid, dns, console)  # the old fid is gone now
        yield private_act(reactor, base_dir, network, t1, console)
        yield pay_act(reactor, base_dir, network, net, chain, t1, console)
        if keep:
            yield keep_up(reactor, network, t1, fid, dns, console)
    finally:
        yield net.stop_all()
        console.print("\nall daemons stopped (SIGTERM; state saved in their data dirs)")


@defer.inlineCallbacks
def orb_command(base_dir, network, *argv):
    """Run the real `orb` command as a user would: (exit status, stdout, stderr)."""
    env = dict(os.environ, ORB_HOME=os.path.join(base_dir, "owner"), ORB_NETWORK=network)
    orb = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "orb")
    out, err, code = yield utils.getProcessOutputAndValue(orb, argv, env=env)
    return code, out.decode(), err.decode()


def replica_table(title, doc, names):
    table = Table(title=title)
    for column in ("host", "node id", "address", "network group", "rtt ms", "verified"):
        table.add_column(column, no_wrap=True)
    for h in doc["hosts"]:
        if not h["in_placement"] and not h["verified"]:
            continue
        address = f"{h['address']['ip']}:{h['address']['port']}" if h["address"] else "-"
        table.add_row(names.get(h["node_id"], h["node_id"][:8]), h["node_id"][:8], address,
                      h["network_group"] or "-", "-" if h["rtt_ms"] is None else str(h["rtt_ms"]),
                      "yes" if h["verified"] and h["live"] else "no")
    return table


def verified_peer_hosts(doc):
    return {h["node_id"] for h in doc["hosts"] if h["verified"] and h["live"] and not h["is_tracker"]}


@defer.inlineCallbacks
def deploy_act(reactor, base_dir, network, t1, t2, peers, names, console):
    """`orb deploy` a real function to the devnet, show its replicas, kill a host, show it back at 3."""
    console.rule("[bold]a function: deployed, replicated, healed")
    fn = os.path.join(base_dir, "adder")
    for argv in (("keygen",), ("init", fn, "--template", "python", "--name", "adder")):
        code, out, err = yield orb_command(base_dir, network, *argv)
        if code:
            raise RuntimeError(f"orb {argv[0]} failed: {err or out}")
    api = f"http://127.0.0.1:{t1.info['http']}"
    console.print(f"$ orb deploy {fn} --tracker {t1.wire_text} --api {api}", highlight=False)
    started = reactor.seconds()
    code, out, err = yield orb_command(base_dir, network, "deploy", fn, "--tracker", t1.wire_text, "--api", api)
    console.print(out.rstrip(), highlight=False, markup=False)
    if code:
        raise RuntimeError(f"orb deploy failed ({code}): {err}")
    fid = next(line.split()[1] for line in out.splitlines() if line.startswith("fid"))
    console.print(f"[green]deployed[/] in {reactor.seconds() - started:.1f} s: samples run locally and at the "
                  "tracker, 3 peers hold verified copies")
    @defer.inlineCallbacks
    def seen_at_t2():  # federation brings tracker-2 the placement a moment after tracker-1 has it
        code, doc = yield t2.get_json(f"/api/v1/functions/{fid}")
        return doc if code == 200 and len(verified_peer_hosts(doc)) == 3 else None

    doc = yield eventually(seen_at_t2, timeout_s=30, what="tracker-2 to see the three verified replicas")
    console.print(replica_table(f"replicas, as tracker-2 sees them (GET /api/v1/functions/{fid[:12]}...)", doc,
                                names))
    victim = next(p for p in peers if p.node_id in verified_peer_hosts(doc))
    console.print(f"\n[bold red]kill -9[/] {names[victim.node_id]} ({victim.node_id[:8]}), one of the hosts")
    killed_at = reactor.seconds()
    yield victim.stop(signal.SIGKILL)

    @defer.inlineCallbacks
    def healed():
        code, doc = yield t1.get_json(f"/api/v1/functions/{fid}")
        hosts = verified_peer_hosts(doc)
        return doc if len(hosts) == 3 and victim.node_id not in hosts else None

    doc = yield eventually(healed, timeout_s=30, what="three verified replicas again")
    console.print(f"[green]back at 3 verified replicas[/] {reactor.seconds() - killed_at:.1f} s later: the tracker "
                  "saw the host gone, offered the function to the spare peer, and challenged its copy")
    console.print(replica_table("replicas after the crash", doc, names))
    return fid


@defer.inlineCallbacks
def dns_port(tracker, timeout_s=10.0):
    """The tracker's DNS port: ``dns`` joins its ports.json a moment after the file is first written."""
    path = os.path.join(tracker.data_dir, "ports.json")
    waited = 0.0
    while True:
        with open(path) as f:
            info = json.load(f)
        if "dns" in info:
            return info["dns"]
        if waited > timeout_s:
            raise RuntimeError("the tracker did not report its DNS port")
        yield sleep(0.1)
        waited += 0.1


@defer.inlineCallbacks
def run_shown(console, argv):
    """Run a real command (found on PATH), print it and its output as a user would see them in a terminal."""
    console.print("$ " + shlex.join(argv), highlight=False, markup=False)
    out, err, code = yield utils.getProcessOutputAndValue(shutil.which(argv[0]), argv[1:], env=dict(os.environ))
    text = (out + err).decode("utf-8", "replace").rstrip()
    if text:
        console.print(text, highlight=False, markup=False)
    return code, out.decode("utf-8", "replace")


@defer.inlineCallbacks
def dns_act(dns, fid, console):
    """Resolve the function's name through the tracker's DNS with the real dig."""
    console.rule("[bold]its name: <fid>.orb through the tracker's DNS")
    dig = shutil.which("dig")
    lines = [[f"{fid}.orb", "A"], [f"{fid}.orb", "TXT"], [f"_orb._tcp.{fid}.orb", "SRV"], ["seed.orb", "SRV"]]
    for name, rtype in lines:
        argv = ["dig", "@127.0.0.1", "-p", str(dns), "+short", name, rtype]
        if dig is None:
            console.print("$ " + shlex.join(argv) + "    (dig is not installed here: apt install dnsutils)",
                          highlight=False, markup=False)
            continue
        yield run_shown(console, argv)


def server_timing(text):
    """``queue;dur=0.012, exec;dur=0.3`` -> {"queue": 0.012, "exec": 0.3} (ms)."""
    out = {}
    for part in text.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                out[name] = float(rest[4:])
            except ValueError:
                pass
    return out


def _breakdown(ms):
    return "/".join(f"{ms[k]:.1f}" if k in ms else "-" for k in ("queue", "fetch", "boot", "exec", "network"))


@defer.inlineCallbacks
def curl_call(url, data, console, headers=()):
    """Call the gateway with the real curl, print the command and its whole answer: (status, headers, body)."""
    argv = ["curl", "-sS", "-i", "-X", "POST", url, "-H", "Content-Type: application/json", "-d", data]
    for header in headers:
        argv += ["-H", header]
    console.print("$ " + shlex.join(argv), highlight=False, markup=False)
    out, err, code = yield utils.getProcessOutputAndValue("/usr/bin/curl", argv[1:], env=dict(os.environ))
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    console.print(text.rstrip(), highlight=False, markup=False)
    if code:
        raise RuntimeError(f"curl failed ({code}): {err.decode('utf-8', 'replace')}")
    head, _, body = text.partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@defer.inlineCallbacks
def invoke_act(reactor, base_dir, network, net, t1, t2, peers, names, fid, dns, console):
    """Call the function through the gateway (curl), the wire, DNS SRV and a peer behind NAT; kill the
    replica that answered and call again."""
    console.rule("[bold]calling it: the gateway, the wire, SRV, a peer behind NAT, a crash")
    api = f"http://127.0.0.1:{t1.info['http']}"
    url = f"{api}/f/{fid}"
    rows = []

    def gateway_row(route, status, headers, body):
        replica = headers.get("orb-replica", "")
        rows.append((route, names.get(replica, replica[:8] or "-"), _breakdown(server_timing(
            headers.get("server-timing", ""))), f"{status} {body.strip()[:24]}"))
        return replica

    @defer.inlineCallbacks
    def orb_row(route, argv):
        console.print("\n$ orb " + shlex.join(argv), highlight=False, markup=False)
        code, out, err = yield orb_command(base_dir, network, *argv)
        console.print(out.rstrip() or err.rstrip(), highlight=False, markup=False)
        if code:
            raise RuntimeError(f"orb {' '.join(argv[:3])} failed ({code}): {err}")
        doc = json.loads(out)
        replica = doc.get("replica") or ""
        timing = {k[:-3] if k.endswith("_ms") else k: v for k, v in (doc.get("timing") or {}).items()}
        rows.append((route, names.get(replica, replica[:8] or "-"), _breakdown(timing),
                     f"{doc.get('status')} {str(doc.get('output', ''))[:24]}"))

    status, headers, body = yield curl_call(url, '{"a": 40, "b": 2}', console)
    answered = gateway_row("gateway (curl)", status, headers, body)
    yield orb_row("wire, via tracker", ("invoke", fid, "--wire", "--tracker", t1.wire_text, "--json",
                                        "--data", '{"a": 1, "b": 2}'))
    yield orb_row("direct (DNS SRV)", ("invoke", fid, "--direct", "--dns", f"127.0.0.1:{dns}", "--json",
                                       "--data", '{"a": 4, "b": 5}'))

    # A peer behind NAT: it accepts no connections, and is reached over its own sessions to the trackers.
    console.print("\n[bold]peer-nat[/] joins with --no-listen: no address, reachable only through its tracker "
                  "sessions (RELAY)", highlight=False)
    nat = yield net.start_peer("peer-nat", "--no-listen", "--tracker", t2.wire_text, "--outbound-peers", "4")
    names[nat.node_id] = "peer-nat"

    victim = next((p for p in peers if p.node_id == answered and p.running), None)
    if victim is not None:
        console.print(f"\n[bold red]kill -9[/] {names[victim.node_id]}, the replica that answered the first call, "
                      "and call again at once:", highlight=False)
        yield victim.stop(signal.SIGKILL)
        status, headers, body = yield curl_call(url, '{"a": 20, "b": 22}', console)
        gateway_row("gateway, after the kill", status, headers, body)
        if status != 200:
            raise RuntimeError(f"the call after the crash failed: {status} {body}")

        @defer.inlineCallbacks
        def nat_hosts():
            code, doc = yield t1.get_json(f"/api/v1/functions/{fid}")
            return doc if code == 200 and nat.node_id in verified_peer_hosts(doc) else None

        started = reactor.seconds()
        yield eventually(nat_hosts, timeout_s=45, what="the peer behind NAT to hold a verified replica")
        console.print(f"[green]peer-nat now hosts a verified replica[/] ({reactor.seconds() - started:.1f} s: the "
                      "only spare left, offered and challenged over its own session)", highlight=False)
        # The router takes peer-nat once its ANNOUNCE listing the function has reached tracker-1 through
        # its home, and P2C takes the cheaper of two replicas: at one call at a time a slightly farther
        # one gets none. So calls go in bursts (whose outstanding calls make the others dearer) until
        # one reaches peer-nat.
        @defer.inlineCallbacks
        def nat_measured():  # a replica whose RTT is not measured yet ranks after every measured one
            code, listing = yield t1.get_json("/api/v1/peers")
            mine = [p for p in listing["peers"] if p["node_id"] == nat.node_id]
            return bool(mine) and mine[0]["rtt_ms"] is not None

        yield eventually(nat_measured, timeout_s=45, what="an RTT measured to the peer behind NAT")
        burst, answers, sent = 6, [], 0
        for _ in range(10):
            results = yield defer.gatherResults([post_json_headers(url, b'{"a": 7, "b": 8}') for _ in range(burst)])
            sent += burst
            answers = [r for r in results if r[1].get("orb-replica") == nat.node_id]
            if answers:
                break
            yield sleep(0.5)
        console.print(f"{sent} calls through the gateway in bursts of {burst}, {len(answers)} of the last burst "
                      "to peer-nat", highlight=False)
        status, headers, body = answers[0] if answers else results[0]
        reached = "reached" if headers.get("orb-replica") == nat.node_id else "did not reach"
        console.print(f"a call {reached} peer-nat: HTTP {status}, route "
                      f"{headers.get('orb-route', '?')}, replica {headers.get('orb-replica', '?')[:16]}..., "
                      f"body {body.strip()}", highlight=False, markup=False)
        if headers.get("orb-replica") == nat.node_id:
            how = "its own session" if headers.get("orb-route") == "direct" else "RELAY via its home"
            gateway_row(f"gateway → peer behind NAT, {how}", status, headers, body)
        else:
            console.print("(the ranking prefers replicas with a lower RTT; peer-nat gets calls once they are "
                          "dearer)", highlight=False)
        yield relay_call(network, t2, nat, fid, console, rows, names)

    code, doc = yield t1.get_json(f"/api/v1/functions/{fid}")
    replicas = len(verified_peer_hosts(doc)) if code == 200 else "?"
    table = Table(title=f"function adder, fid {fid[:16]}..., {replicas} verified replicas")
    for column in ("route", "replica", "queue/fetch/boot/exec/network ms", "result"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


SUNSET_AHEAD_S = 8  # the demo's deprecation: time to show the headers and DNS before the sunset


@defer.inlineCallbacks
def names_act(reactor, base_dir, network, t1, fid, dns, console):
    """Name the function, call it by name, update it, deprecate the old version, watch its sunset."""
    console.rule("[bold]names and versions: orb name, orb update, orb deprecate")
    api = f"http://127.0.0.1:{t1.info['http']}"
    where = ("--tracker", t1.wire_text, "--api", api)

    @defer.inlineCallbacks
    def orb_shown(*argv):
        console.print("\n$ orb " + shlex.join(argv), highlight=False, markup=False)
        code, out, err = yield orb_command(base_dir, network, *argv, *where)
        console.print((out or err).rstrip(), highlight=False, markup=False)
        if code:
            raise RuntimeError(f"orb {argv[0]} failed ({code}): {err}")
        return out

    yield orb_shown("name", "adder", fid)
    code, out, err = yield orb_command(base_dir, network, "info", "adder", "--api", api, "--json")
    label = json.loads(out)["owner_label"]
    by_name = f"{api}/n/{label}/adder"
    console.print(f"\nthe name is adder.{label}.orb; the gateway calls it at /n/<owner>/<name>:", highlight=False)
    yield curl_call(by_name, '{"a": 1, "b": 1}', console)

    fn = os.path.join(base_dir, "adder")
    with open(os.path.join(fn, "orb.toml")) as f:
        toml = f.read()
    with open(os.path.join(fn, "orb.toml"), "w") as f:
        f.write(toml.replace('version = "0.1.0"', 'version = "0.2.0"').replace("replicas = 3", "replicas = 2"))
    console.print("\na second version (orb.toml: version 0.2.0, 2 replicas): a new package, so a new fid",
                  highlight=False)
    out = yield orb_shown("update", fn, "--timeout", "60")
    new = next(line.split()[-1] for line in out.splitlines() if line.startswith("fid"))
    yield curl_call(by_name, '{"a": 2, "b": 2}', console)

    out = yield orb_shown("deprecate", fid, "--successor", new, "--sunset", f"+{SUNSET_AHEAD_S}s")
    console.print("\nthe old version still answers, with the headers of RFC 9745, RFC 8594 and RFC 5829:",
                  highlight=False)
    yield curl_call(f"{api}/f/{fid}", '{"a": 3, "b": 3}', console)
    if shutil.which("dig"):
        yield run_shown(console, ["dig", "@127.0.0.1", "-p", str(dns), "+short", f"{fid}.orb", "TXT"])

    @defer.inlineCallbacks
    def sunset_passed():
        code, _ = yield t1.get_json(f"/api/v1/functions/{fid}")
        return code == 410

    yield eventually(sunset_passed, timeout_s=SUNSET_AHEAD_S + 20, what="the old version's sunset")
    console.print(f"\n[bold]past the sunset[/] ({SUNSET_AHEAD_S} s later): the old fid is gone", highlight=False)
    yield curl_call(f"{api}/f/{fid}", '{"a": 4, "b": 4}', console)
    if shutil.which("dig"):
        argv = ["dig", "@127.0.0.1", "-p", str(dns), f"{fid}.orb", "A"]
        console.print("$ " + shlex.join(argv) + " | grep status", highlight=False, markup=False)
        out, _, _ = yield utils.getProcessOutputAndValue(shutil.which("dig"), argv[1:], env=dict(os.environ))
        status = [line.strip() for line in out.decode().splitlines() if "status:" in line]
        console.print(status[0] if status else "(no answer)", highlight=False, markup=False)
        yield run_shown(console, ["dig", "@127.0.0.1", "-p", str(dns), "+short", f"adder.{label}.orb", "A"])
    yield curl_call(by_name, '{"a": 5, "b": 5}', console)
    console.print(f"\n$ orb info adder --api {api}", highlight=False, markup=False)
    code, out, err = yield orb_command(base_dir, network, "info", "adder", "--api", api)
    console.print((out or err).rstrip(), highlight=False, markup=False)
    return new


PRIVATE_HANDLER = '''\
import hashlib
import hmac


def handler(event, context):
    """Signs its input with a key only its hosts can read (context.secrets); unsigned where it has none."""
    key = context.secrets.get("SIGNING_KEY")
    if key is None:  # the samples, run by orb deploy and the tracker, which never see a secret
        return {"signed": False}
    return {"signed": True, "hmac": hmac.new(key.encode(), event, hashlib.sha256).hexdigest()[:24]}
'''
PRIVATE_SAMPLE = '''[[sample]]
name = "unsigned without its secret"
input = "hello"
output_json = { signed = false }
'''


@defer.inlineCallbacks
def private_act(reactor, base_dir, network, t1, console):
    """A private function with a sealed secret: refused without a token, answered with one."""
    console.rule("[bold]a private function: a capability token, a secret sealed to its hosts")
    api = f"http://127.0.0.1:{t1.info['http']}"
    where = ("--tracker", t1.wire_text, "--api", api)

    @defer.inlineCallbacks
    def orb_shown(*argv, show=None):
        console.print("\n$ orb " + shlex.join(show or argv), highlight=False, markup=False)
        code, out, err = yield orb_command(base_dir, network, *argv)
        console.print((out or err).rstrip(), highlight=False, markup=False)
        if code:
            raise RuntimeError(f"orb {argv[0]} failed ({code}): {err}")
        return out

    fn = os.path.join(base_dir, "signer")
    code, out, err = yield orb_command(base_dir, network, "init", fn, "--template", "python", "--name", "signer")
    if code:
        raise RuntimeError(f"orb init failed: {err or out}")
    with open(os.path.join(fn, "main.py"), "w") as f:
        f.write(PRIVATE_HANDLER)
    with open(os.path.join(fn, "orb.toml")) as f:
        toml = f.read()
    toml = toml.replace('visibility = "public"', 'visibility = "private"').replace("replicas = 3", "replicas = 2")
    toml = toml.replace("pure = true", "pure = false")
    toml = toml[: toml.index("[[sample]]")] + PRIVATE_SAMPLE
    with open(os.path.join(fn, "orb.toml"), "w") as f:
        f.write(toml)
    console.print('\norb.toml says visibility = "private"; main.py signs its input with context.secrets["SIGNING_KEY"] '
                  "(its sample, run where there is no secret, expects an unsigned answer)", highlight=False)
    out = yield orb_shown("deploy", fn, *where)
    fid = next(line.split()[1] for line in out.splitlines() if line.startswith("fid"))
    key_file = os.path.join(base_dir, "signer.env")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("SIGNING_KEY=" + os.urandom(16).hex() + "\n")
    yield orb_shown("secret", "set", fid, "--from-file", key_file, "--all-hosts", *where)
    console.print("\nwithout a token the gateway refuses the call:", highlight=False)
    yield curl_call(f"{api}/f/{fid}", '"hello"', console)
    token = (yield orb_shown("grant", fid, "--bearer", "--expires", "10m")).strip().splitlines()[-1].strip()
    console.print("\nwith the token in Authorization: Bearer, the function answers (the key never leaves its hosts):",
                  highlight=False)
    status, _, body = yield curl_call(f"{api}/f/{fid}", '"hello"', console, headers=[f"Authorization: Bearer {token}"])
    if status != 200:
        raise RuntimeError(f"the private function did not answer with a token: {status} {body}")


CLAIM_EVERY_S = 5
VOUCHER_ASK_EVERY_S = 3
PEER_GAS_WEI = 10**18  # what each host's wallet gets from a dev account, to pay the gas of its claims
OWNER_WEI = 10**18
PRICE_WEI = 10**15  # per request served: 20 calls pay 0.02 ETH, well above a claim's gas here
PAID_CALLS = 20  # the deposit pays for exactly these: the next paid call is answered 402


def peer_wallet_address(peer):
    from orb.pay import wallet

    return wallet.info(os.path.join(peer.data_dir, "private", "wallet.json"))["address"]


@defer.inlineCallbacks
def fund_peer_wallet(chain, peer):
    """Send a host's wallet ether from the chain's first dev account, for the gas of its claims."""
    from orb.pay import chain as chainmod

    dev = chainmod.load_dev_accounts(chain.data_dir)[0]
    yield send_ether(chain_url(chain), dev["private_key"], peer_wallet_address(peer), PEER_GAS_WEI)


def chain_view(url, escrow_address, fid_text, hosts, from_block):
    """(balances of ``hosts``, the fid's escrow balance, its claims since ``from_block`` with their
    transactions' gas, the block read): blocking, run in a thread. A claim's ``claim`` is its Claimed event
    (orb.pay.contract.Claim: cumulative counters), ``amount`` what it paid."""
    from orb.pay import client
    from orb.pay.contract import Escrow, fid_key
    from orb.protocol import fid as fidmod

    w3 = client.connect(url)
    escrow = Escrow(w3, escrow_address)
    key = fid_key(fidmod.from_text(fid_text))
    block = w3.eth.block_number
    receipts = {}
    claims = []
    for c in escrow.claims(key, from_block, block).claims:
        if c.tx not in receipts:  # a batch claim is one transaction for several vouchers
            receipts[c.tx] = w3.eth.get_transaction_receipt(c.tx)
        receipt = receipts[c.tx]
        claims.append({"claim": c, "host": c.host, "amount": c.amount_wei,
                       "gas": receipt["gasUsed"], "fee": receipt["gasUsed"] * receipt.get("effectiveGasPrice", 0),
                       "tx": c.tx})
    balances = {h: w3.eth.get_balance(h, block) for h in hosts}
    return balances, escrow.funds(key, block).balance_wei, claims, block


def paid_requests(claims):
    """The requests ``claims`` (chain_view's) paid for in all, by orb.pay.contract.paid_by_host: each channel's
    latest cumulative counter (a fresh fid's start at 0), not the sum of the counters, which would count a host's
    second claim twice."""
    from orb.pay.contract import paid_by_host

    return sum(h.requests for h in paid_by_host(c["claim"] for c in claims))


@defer.inlineCallbacks
def payment_counts(tracker):
    """(calls counted for vouchers, unauthorized calls) so far, from the tracker's /api/v1/stats."""
    _, stats = yield tracker.get_json("/api/v1/stats")
    counts = stats.get("payments") or {}
    return counts.get("calls_counted", 0), counts.get("calls_unauthorized", 0)


def eth(wei):
    return f"{wei / 10**18:.6f}"


@defer.inlineCallbacks
def pay_act(reactor, base_dir, network, net, chain, t1, console):
    """A wallet funds a fresh function on the escrow (`orb deploy --fund`); calls through the gateway; a host
    claims its vouchers on its own, and its balance rises by the price of the requests it served, less the gas."""
    from orb.pay import chain as chainmod
    from orb.pay import client

    console.rule("[bold]payments: the function funded on the escrow, its hosts paid per request")
    started = reactor.seconds()
    api = f"http://127.0.0.1:{t1.info['http']}"
    url = chain_url(chain)

    @defer.inlineCallbacks
    def orb_shown(*argv):
        console.print("\n$ orb " + shlex.join(argv), highlight=False, markup=False)
        code, out, err = yield orb_command(base_dir, network, *argv)
        console.print((out or err).rstrip(), highlight=False, markup=False)
        if code:
            raise RuntimeError(f"orb {argv[0]} failed ({code}): {err}")
        return out

    out = yield orb_shown("wallet", "new")
    owner = out.split()[0]
    dev = chainmod.load_dev_accounts(chain.data_dir)[0]
    yield send_ether(url, dev["private_key"], owner, OWNER_WEI)
    console.print(f"the chain's dev account {dev['address'][:10]}... sent the owner's wallet {eth(OWNER_WEI)} ETH",
                  highlight=False)
    hosts = {}
    for d in net.daemons:
        if d.kind == "orb-peer" and d.running:
            hosts[peer_wallet_address(d)] = os.path.basename(d.data_dir)
    funded = yield client.in_thread(lambda: {h: client.connect(url).eth.get_balance(h) for h in hosts})
    for d in net.daemons:  # a peer started later than the devnet (peer-nat) has no gas yet
        if d.kind == "orb-peer" and d.running and not funded[peer_wallet_address(d)]:
            yield fund_peer_wallet(chain, d)

    fn = os.path.join(base_dir, "paid")
    code, out, err = yield orb_command(base_dir, network, "init", fn, "--template", "python", "--name", "paid")
    if code:
        raise RuntimeError(f"orb init failed: {err or out}")
    with open(os.path.join(fn, "orb.toml")) as f:
        toml = f.read()
    with open(os.path.join(fn, "orb.toml"), "w") as f:
        f.write(toml.replace("replicas = 3", "replicas = 2") + "\n[payment]\nrequired = true\n")
    console.print("\norb.toml ends with [payment] required = true: once its deposit is spent, the function is "
                  "answered 402 rather than served unpaid", highlight=False, markup=False)
    deposit_eth = f"{PAID_CALLS * PRICE_WEI / 10**18:g}"
    out = yield orb_shown("deploy", fn, "--tracker", t1.wire_text, "--api", api, "--fund", "--eth", deposit_eth,
                          "--price-wei", str(PRICE_WEI), "--eth-rpc", url)
    fid = next(line.split()[1] for line in out.splitlines() if line.startswith("fid"))
    yield orb_shown("info", fid, "--api", api, "--eth-rpc", url)

    view = yield client.in_thread(chain_view, url, chain.info["escrow"], fid, list(hosts), 0)
    before, escrow_before, _, block = view
    counted_before = yield payment_counts(t1)
    console.print("\na call without the owner's token is served, but earns its host nothing (a host could make "
                  "such calls itself, under any key):", highlight=False)
    yield curl_call(f"{api}/f/{fid}", '{"a": 100, "b": 1}', console)
    console.print("\nthe owner gives its client an API key: a capability token for this function", highlight=False)
    token = (yield orb_shown("grant", fid, "--bearer", "--expires", "10m")).strip().splitlines()[-1].strip()
    ok = 0
    for i in range(PAID_CALLS):  # distinct inputs: a pure function's repeated call is a cache hit, and earns nothing
        status, _, _ = yield post_json_headers(f"{api}/f/{fid}", json.dumps({"a": i, "b": 1}).encode(),
                                               {"Authorization": f"Bearer {token}"})
        ok += status == 200
    console.print(f"\n{ok} of {PAID_CALLS} calls with the token through the gateway answered 200; the deposit paid "
                  f"for {PAID_CALLS}, so the next one is refused:", highlight=False)
    status, _, body = yield curl_call(f"{api}/f/{fid}", '{"a": 200, "b": 1}', console,
                                      headers=[f"Authorization: Bearer {token}"])
    if status != 402:
        raise RuntimeError(f"a call past the deposit answered {status}, not 402: {body[:300]}")
    counted = yield payment_counts(t1)
    console.print(f"tracker-1 counted {counted[0] - counted_before[0]} of these calls for vouchers and "
                  f"{counted[1] - counted_before[1]} unauthorized one(s) for nothing; the hosts ask it for "
                  f"vouchers every {VOUCHER_ASK_EVERY_S} s and claim every {CLAIM_EVERY_S} s past 1 wei",
                  highlight=False)
    state = {}

    @defer.inlineCallbacks
    def all_claimed():
        state["view"] = yield client.in_thread(chain_view, url, chain.info["escrow"], fid, list(hosts), block)
        return paid_requests(state["view"][2]) >= ok

    try:
        yield eventually(all_claimed, timeout_s=40, interval_s=1, what="the hosts' claims")
    except AssertionError:
        if not state.get("view") or not state["view"][2]:
            raise
        console.print("(not every request is claimed yet; the table shows the claims made so far)")
    after, escrow_after, claims, _ = state["view"]
    table = Table(title=f"hosts paid for {ok} requests at {eth(PRICE_WEI)} ETH each (balances in ETH)")
    for column in ("host", "before", "after", "requests", "paid", "claim gas"):
        table.add_column(column, no_wrap=True)
    lines = []
    for address, name in sorted(hosts.items(), key=lambda kv: kv[1]):
        mine = [c for c in claims if c["host"].lower() == address.lower()]
        if not mine:
            continue
        requests, amount = paid_requests(mine), sum(c["amount"] for c in mine)
        fee, gas = sum(c["fee"] for c in mine), sum(c["gas"] for c in mine)
        table.add_row(name, eth(before[address]), eth(after[address]), str(requests), eth(amount), str(gas))
        change = after[address] - before[address]
        lines.append(f"{name}'s balance {'rose' if change > 0 else 'fell'} by {eth(abs(change))} ETH: paid "
                     f"{eth(amount)} for {requests} request(s), less {eth(fee)} ETH for {len(mine)} claim(s) "
                     f"(claim gas {', '.join(str(c['gas']) for c in mine)})")
    console.print(table)
    for line in lines:
        console.print(line, highlight=False)
    paid = sum(c["amount"] for c in claims)
    requests = paid_requests(claims)
    console.print(f"the escrow paid {eth(paid)} ETH ({requests} requests x {eth(PRICE_WEI)}); "
                  f"the function's balance went from {eth(escrow_before)} to {eth(escrow_after)} ETH; a claim's gas "
                  f"does not grow with the requests its voucher covers ({reactor.seconds() - started:.1f} s for this "
                  "act)", highlight=False)


def keep_up(reactor, network, t1, fid, dns, console):
    """--keep: leave the devnet running, print lines to paste, and wait for Ctrl-C."""
    api = f"http://127.0.0.1:{t1.info['http']}"
    console.rule("[bold]the devnet stays up (--keep); Ctrl-C stops every daemon")
    orb_env = f"ORB_NETWORK={network} ORB_API={api} ORB_TRACKER={t1.wire_text} ORB_DNS=127.0.0.1:{dns}"
    for line in (
        f"dashboard:  {api}/",
        f"curl -X POST {api}/f/{fid} -d '{{\"a\": 1, \"b\": 2}}'",
        f"dig @127.0.0.1 -p {dns} _orb._tcp.{fid}.orb SRV",
        f"{orb_env} .venv/bin/orb invoke {fid} --data '{{\"a\": 1, \"b\": 2}}' --json",
        f"{orb_env} .venv/bin/orb resolve {fid}.orb",
    ):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    stopped = defer.Deferred()

    def interrupted(signum, frame):
        # Ours, not the reactor's: Ctrl-C ends the wait, and the devnet is then stopped in order.
        reactor.callFromThread(lambda: stopped.called or stopped.callback(None))

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    return stopped


class _RelayCatcher(SessionHandler):
    """A caller's session handler that hands over the RELAY frames it receives."""

    def __init__(self):
        self.ready, self.relays = defer.Deferred(), defer.DeferredQueue(backlog=1, size=16)

    def session_ready(self, protocol):
        if not self.ready.called:
            self.ready.callback(protocol)

    def message_received(self, protocol, message, request_id):
        if isinstance(message, m.Relay):
            self.relays.put(message)


@defer.inlineCallbacks
def relay_call(network, home, nat, fid, console, rows, names):
    """RFC 10.3 by hand: RELAY(target = peer-nat, frame = INVOKE) to its home tracker, the answer in RELAY."""
    from twisted.internet import reactor

    from orb.protocol import fid as fidmod
    from orb.protocol.relay import decode_inner, encode_inner

    key = NodeKey.generate()
    handler = _RelayCatcher()
    factory = OrbFactory(LocalIdentity(key.public_bytes, int(Role.PEER)), handler, reactor, initiator=True,
                         config=SessionConfig(network=network))
    host, port = home.wire
    yield endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=5).connect(NodeTLS(key).wrap(factory, True))
    protocol = yield handler.ready
    try:
        magic = SessionConfig(network=network).magic
        call = m.Invoke(fid=fidmod.from_text(fid), deadline_ms=10_000, token=b"", input=b'{"a": 30, "b": 12}')
        console.print("\nRELAY(target = peer-nat, INVOKE) to tracker-2, its home, on a session of our own "
                      "(RFC 10.3):", highlight=False)
        protocol.send(m.Relay(target=bytes.fromhex(nat.node_id), frame=encode_inner(magic, call, 1)))
        back = yield handler.relays.get().addTimeout(15, reactor)
        answer = decode_inner(back.frame, magic, 4 * 1024 * 1024).message
    finally:
        protocol.transport.loseConnection()
    if not isinstance(answer, m.Result):
        raise RuntimeError(f"the relayed call was refused: {answer}")
    console.print(f"RELAY back from peer-nat: {answer.status_kind.name} {answer.output.decode('utf-8', 'replace')}",
                  highlight=False, markup=False)
    ms = {k: getattr(answer, f"{k}_us") / 1000 for k in ("queue", "fetch", "boot", "exec")}
    rows.append(("RELAY via its home → NAT peer", names.get(nat.node_id, "peer-nat"), _breakdown(ms),
                 f"{answer.status_kind.name.lower()} {answer.output.decode('utf-8', 'replace')[:24]}"))


@defer.inlineCallbacks
def post_json_headers(url, body, headers=None):
    """POST ``body`` with ``headers`` ({name: value}): (status, {lowercased header: first value}, body text)."""
    from io import BytesIO

    from twisted.internet import protocol, reactor
    from twisted.web.client import Agent, FileBodyProducer

    class Collect(protocol.Protocol):
        def __init__(self):
            self.parts, self.done = [], defer.Deferred()

        def dataReceived(self, data):
            self.parts.append(data)

        def connectionLost(self, reason):
            self.done.callback(b"".join(self.parts))

    from twisted.web.http_headers import Headers

    sent = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
    response = yield Agent(reactor).request(b"POST", url.encode(), sent, FileBodyProducer(BytesIO(body)))
    collect = Collect()
    response.deliverBody(collect)
    data = yield collect.done
    headers = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return response.code, headers, data.decode("utf-8", "replace")


DEMO_FUNCTION = b"""\
import json


def handler(event, context):
    numbers = json.loads(event)
    return {"sum": sum(numbers), "request": context.request_id}
"""

HOSTILE_FUNCTION = b"""\
import socket


def handler(event, context):
    socket.create_connection(("127.0.0.1", 7400))
    return "escaped"
"""


@defer.inlineCallbacks
def run_jail(reactor, base_dir, console):
    from orb.exec import ExecConfig, Executor, RuntimeSpec

    console.rule("[bold]the jail: functions run as strangers' code")
    packages = {}
    for name, source in (("adder", DEMO_FUNCTION), ("escaper", HOSTILE_FUNCTION)):
        package = os.path.join(base_dir, name)
        os.makedirs(package, exist_ok=True)
        with open(os.path.join(package, "main.py"), "wb") as f:
            f.write(source)
        packages[name] = package
    executor = Executor(reactor, ExecConfig(max_concurrent=2))
    try:
        layers = yield executor.start()
        present = ", ".join(sorted(k for k, v in layers.get("layers", layers).items() if v is True))
        console.print(f"layers on this kernel: {present}", highlight=False)
        spec = RuntimeSpec(runtime="python", entry="main.py", reuse="per-call")
        for i in range(3):
            result = yield executor.invoke("adder", packages["adder"], spec, b"[2, 3, %d]" % i, deadline_s=5.0,
                                           request_id=f"call-{i}")
            console.print(f"adder   {result.status.name} {result.output.decode()}  boot {result.boot_ms:.1f} ms, "
                          f"exec {result.exec_ms:.1f} ms", highlight=False)
        result = yield executor.invoke("escaper", packages["escaper"], spec, b"", deadline_s=5.0,
                                       request_id="hostile")
        console.print(f"escaper {result.status.name}: {result.message}", highlight=False)
    finally:
        yield executor.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m orb.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="keep node keys here (default: a fresh temporary dir)")
    parser.add_argument("--network", default="devnet", help="network name (default: devnet)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the devnet up after the calls and print lines to paste (Ctrl-C stops it)")
    parser.add_argument("--peers", type=int, default=4, choices=range(4, 21), metavar="N",
                        help="peers in the devnet (4-20, default 4: three replicas and a spare)")
    args = parser.parse_args(argv)
    console = Console()

    @defer.inlineCallbacks
    def both(reactor, base_dir):
        console.rule("[bold]the wire: one TLS session, frame by frame")
        yield run(reactor, os.path.join(base_dir, "wire"), args.network, console)
        yield run_devnet(reactor, os.path.join(base_dir, "devnet"), args.network, args.peers, console, args.keep)
        yield run_jail(reactor, os.path.join(base_dir, "jail"), console)

    def go(reactor):
        if args.data_dir:
            return both(reactor, os.path.abspath(args.data_dir))
        tmp = tempfile.TemporaryDirectory(prefix="orb-demo-")
        d = both(reactor, tmp.name)
        d.addBoth(lambda r: (tmp.cleanup(), r)[1])
        return d

    react(go)


if __name__ == "__main__":
    sys.exit(main())
