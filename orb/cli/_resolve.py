# -*- test-case-name: tests.test_dns_live -*-
"""
``orb resolve NAME [--dns HOST:PORT] [--json]``: what a tracker's DNS says
of a name in ``.orb`` (RFC 9.9): its A, AAAA and TXT records and, for a
function or ``seed.orb``, the SRV list with each target's addresses.

The server is ``--dns``, else ``$ORB_DNS``, else 127.0.0.1:53. Exit
status 0 with an answer, 10 when the name does not exist (NXDOMAIN), 6
when the server cannot be asked.
"""

import os

from twisted.internet import defer

from orb import _options

from . import _function, _network, _ui
from ._ui import CommandError

DEFAULT_DNS = "127.0.0.1:53"


def register(sub):
    p = sub.add_parser("resolve", help="look a .orb name up in a tracker's DNS (A, TXT, SRV)",
                       description="Ask a tracker's DNS (--dns HOST:PORT, $ORB_DNS) for NAME's A, AAAA and TXT "
                                   "records and, for <fid>.orb and seed.orb, the SRV list: the replicas (or "
                                   "trackers) best first, with their addresses.")
    p.add_argument("name", metavar="NAME", help="<fid>.orb, seed.orb, _orb._tcp.<fid>.orb, <node>.peer.orb, ...")
    p.add_argument("--dns", metavar="HOST:PORT", help=f"the DNS server (default: $ORB_DNS, else {DEFAULT_DNS})")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=_function._guarded(resolve_verb))


def dns_server(flag, environ=None):
    """(host, port) from --dns, else $ORB_DNS, else DEFAULT_DNS; CommandError(2) when it is not HOST:PORT."""
    environ = os.environ if environ is None else environ
    text, source = (flag, "--dns") if flag else (environ.get("ORB_DNS"), "ORB_DNS")
    if not text:
        text, source = DEFAULT_DNS, "the default"
    try:
        return _options.parse_hostport(text, source)
    except _options.usage.UsageError as e:
        raise CommandError(str(e), _ui.EXIT_USAGE, "usage") from None


def resolve_verb(args):
    server = dns_server(args.dns)
    name = args.name if args.name.endswith((".orb", ".orb.")) or args.name in ("orb", "orb.") else f"{args.name}.orb"
    doc = _network.run_flow(lambda reactor: _resolve(reactor, server, name), {})
    if doc["status"] == "nxdomain":
        raise CommandError(f"{doc['name']}: no such name at {doc['server']} (NXDOMAIN)", _ui.EXIT_NOT_FOUND,
                           "not_found", {"name": doc["name"]})
    _ui.emit(args, {**doc, "ok": True}, lambda c: _table(c, doc))
    return _ui.EXIT_OK


@defer.inlineCallbacks
def _resolve(reactor, server, name):
    from orb.dns import client

    try:
        doc = yield client.resolve(reactor, server, name)
    except Exception as e:
        raise CommandError(f"cannot ask {server[0]}:{server[1]} for {name}: {_network._why(e)} (--dns, $ORB_DNS)",
                           _ui.EXIT_NETWORK, "network") from None
    return doc


def _table(c, doc):
    from rich.table import Table

    table = Table(title=f"{doc['name']} at {doc['server']}", show_lines=False, title_justify="left")
    for column in ("TYPE", "PRIO", "WEIGHT", "PORT", "VALUE", "ADDRESSES"):
        table.add_column(column, overflow="fold")
    for ip in doc["a"]:
        table.add_row("A", "", "", "", ip, "")
    for ip in doc["aaaa"]:
        table.add_row("AAAA", "", "", "", ip, "")
    for strings in doc["txt"]:
        table.add_row("TXT", "", "", "", _network._remote_text(" ".join(strings), 1000), "")
    for s in doc["srv"]:
        table.add_row("SRV", str(s["priority"]), str(s["weight"]), str(s["port"]), s["target"],
                      ", ".join(s["addresses"]))
    c.print(table)
    if doc["srv_name"] and not doc["srv"]:
        c.print(f"{doc['srv_name']}: no SRV records (no replica takes direct calls yet)", markup=False)
