# -*- test-case-name: tests.test_dns_live -*-
"""
Direct calls (the proposal's IoT pattern, RFC 9.9): ask a tracker's DNS
for ``_orb._tcp.<fid>.orb`` SRV, then call the first replica that answers
over the ORB wire, falling back down the SRV list.

Each SRV target is ``<node>.peer.orb``: the session to it is pinned to
that node id (RFC 7.5), so a hijacked address cannot answer for the
replica. Targets are tried in the order the server lists them, which is
its ranking's best first (RFC 9.9: priorities never contradict it), not
reshuffled by weight. ``orb invoke --direct`` calls :func:`direct_call`.
"""

from twisted.internet import defer, error

from orb.dns import client as dns_client
from orb.protocol import fid as _fid
from orb.protocol.codes import ResultStatus

from . import _config, _network, _ui
from ._ui import CommandError

SKIP = (ResultStatus.BUSY, ResultStatus.NOT_FOUND)  # the replica did not start the call: try the next


@defer.inlineCallbacks
def direct_call(reactor, dns_server, fid_text, data, timeout_s, network, lookup=dns_client.lookup_srv):
    """Call ``fid_text`` on the best reachable replica the DNS at ``dns_server`` (host, port) lists.
    The same dict as ``_invoke.wire_call``, with ``route`` "direct", the ``replica`` that answered (hex
    node id), the ``target`` name and the replicas ``tried``. CommandError when none can take it."""
    from orb.net.adapter import RemoteError, RequestTimeout
    from orb.protocol.messages import Invoke

    raw = _fid.from_text(fid_text)
    started = reactor.seconds()
    srv_name = f"_orb._tcp.{fid_text}.orb"
    try:
        targets = yield lookup(reactor, dns_server, srv_name)
    except Exception as e:
        raise CommandError(f"cannot resolve {srv_name} at {dns_server[0]}:{dns_server[1]}: {_network._why(e)} "
                           "(--dns)", _ui.EXIT_NETWORK, "network") from None
    if not targets:
        raise CommandError(f"{srv_name} lists no replica that takes direct calls (no such function, or none "
                           "reachable yet)", _ui.EXIT_NOT_FOUND, "not_found")
    tried, why = [], []
    for target in targets:
        for host in target.addresses:
            remaining = timeout_s - (reactor.seconds() - started)
            if remaining <= 0:
                raise CommandError(f"the deadline passed after trying {len(tried)} replica(s)", _ui.EXIT_TIMEOUT,
                                   "timeout")
            tried.append(target.target)
            address = _config.TrackerAddress(host, target.port, target.node_id, f"SRV {target.target}")
            client = _network.SessionClient()
            try:
                p = yield _network.connect(reactor, address, network, client,
                                           timeout_s=min(_network.CONNECT_TIMEOUT_S, remaining))
            except CommandError as e:
                why.append(f"{target.target}: {e}")
                continue
            try:
                result = yield p.request(Invoke(fid=raw, deadline_ms=max(1, int(remaining * 1000)), token=b"",
                                                input=data), timeout_s=remaining + 1)
            except RequestTimeout:
                raise CommandError(f"the replica {target.target} did not answer within {remaining + 1:.3g} s",
                                   _ui.EXIT_TIMEOUT, "timeout") from None
            except (RemoteError, error.ConnectionLost, error.ConnectionDone, ConnectionError) as e:
                why.append(f"{target.target}: {_network._why(e)}")
                continue
            finally:
                yield _network.close_session(reactor, p, client)
            if result.status_kind in SKIP:
                why.append(f"{target.target}: {result.status_kind.name.lower()}")
                continue
            timing = {f"{name}_ms": getattr(result, f"{name}_us") / 1000 for name in ("queue", "fetch", "boot", "exec")}
            return {"status": result.status_kind.name, "output": result.output,
                    "log": result.log.decode("utf-8", "replace"),
                    "replica": target.node_id.hex() if target.node_id else None, "timing": timing,
                    "route": "direct", "target": target.target, "address": f"{host}:{target.port}", "tried": tried}
            break  # one address per target is tried to the end
    raise CommandError(f"no replica that {srv_name} lists took the call: " + "; ".join(why)[:800], _ui.EXIT_BUSY,
                       "busy")
