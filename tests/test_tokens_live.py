"""
Private functions with real daemons (issue 13): a `twistd orb-tracker` and one `twistd orb-peer`, the
`orb` command as the owner, Alice and Bob. A token-less call is refused, a granted token calls through
the gateway and over the wire, Alice's delegation to Bob works while a widened one is refused, and a
revocation takes effect at the gateway, on the wire and at the host called directly.
"""

import json
import os
import re

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from orb.devnet import open_session
from orb.identity import NodeKey
from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol import token as t
from orb.protocol.codes import ResultStatus
from tests._daemons import DaemonTestMixin, eventually, sleep
from tests.test_functions import api, post

HANDLER = '''\
def handler(event, context):
    return {"secret": 42}
'''


class PrivateFunctionLiveTests(DaemonTestMixin, TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def deploy_private(self):
        tracker = yield self.start_tracker("t1")
        peer = yield self.start_peer("p1", "--tracker", tracker.wire_text)
        yield sleep(1)
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        path = os.path.join(self.net.base_dir, "private-fn")
        code, _, err = yield self.orb("init", path, "--template", "python", "--name", "hidden")
        self.assertEqual(code, 0, err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(HANDLER)
        with open(os.path.join(path, "orb.toml")) as f:
            toml = f.read()
        toml = re.sub(r"(?m)^replicas = \d+", "replicas = 1", toml)
        toml = re.sub(r"(?ms)^\[\[sample\]\].*", '[[sample]]\ninput_json = {}\noutput_json = { secret = 42 }\n', toml)
        toml = toml.replace('visibility = "public"', 'visibility = "private"')
        toml = re.sub(r"(?m)^pure = \w+", "pure = false", toml)
        with open(os.path.join(path, "orb.toml"), "w") as f:
            f.write(toml)
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", api(tracker),
                                        "--json")
        self.assertEqual(code, 0, out + err)
        return tracker, peer, json.loads(out)["fid"]

    def user_key(self, home):
        return NodeKey.load_or_create(os.path.join(self.net.base_dir, home))

    @defer.inlineCallbacks
    def invoke(self, tracker, fid, token=None, wire=False, home="alice"):
        argv = ["invoke", fid, "--data", "{}", "--json"]
        argv += ["--wire", "--tracker", tracker.wire_text] if wire else ["--api", api(tracker)]
        if token:
            argv += ["--token", token]
        code, out, err = yield self.orb(*argv, home=home)
        return code, out + err

    @defer.inlineCallbacks
    def test_tokens_end_to_end(self):
        """Refused without a token, called with one, delegated, a widening refused, revoked everywhere."""
        tracker, peer, fid = yield self.deploy_private()
        alice, bob = self.user_key("alice"), self.user_key("bob")

        # No token: 401 at the gateway, exit 7 from orb invoke, on the wire too.
        code, body, headers = yield post(f"{api(tracker)}/f/{fid}", b"{}")
        self.assertEqual((code, json.loads(body)["code"]), (401, "token_required"))
        code, out = yield self.invoke(tracker, fid)
        self.assertEqual(code, 7, out)
        code, out = yield self.invoke(tracker, fid, wire=True)
        self.assertEqual(code, 7, out)
        self.assertIn("token_required", out)

        # The owner grants Alice a delegable token: it works through the gateway and over the wire.
        code, out, err = yield self.orb("grant", fid, "--to", alice.public_bytes.hex(), "--delegable", "--json")
        self.assertEqual(code, 0, err)
        token = json.loads(out)["token"]
        code, out = yield self.invoke(tracker, fid, token)
        self.assertEqual(code, 0, out)
        self.assertEqual(json.loads(json.loads(out)["output"]), {"secret": 42})
        code, out = yield self.invoke(tracker, fid, token, wire=True)
        self.assertEqual(code, 0, out)
        code, out = yield self.invoke(tracker, fid, token, home="bob")  # Bob's key is not Alice's
        self.assertEqual(code, 7, out)
        self.assertIn("token_caller", out)

        # Alice delegates to Bob; a widening is refused by orb grant, and by the gateway if built by hand.
        code, child, err = yield self.orb("grant", "--from", token, "--to", bob.public_bytes.hex(), "--expires",
                                          "10m", home="alice")
        self.assertEqual(code, 0, err)
        code, out = yield self.invoke(tracker, fid, child.strip(), home="bob")
        self.assertEqual(code, 0, out)
        code, _, err = yield self.orb("grant", "--from", token, "--bearer", "--expires", "300d", home="alice")
        self.assertEqual(code, 7, err)
        self.assertIn("widen", err)
        parent = t.decode(t.from_text(token))
        link = t.Link(alice.public_bytes, t.SCOPE_FID, fidmod.from_text(fid), None, parent.last.not_after + 600,
                      False, root=False)
        link = _signed(link, alice, parent)
        widened = t.Token((*parent.links, link)).text()
        code, body, _ = yield post_with(f"{api(tracker)}/f/{fid}", b"{}", {b"Authorization": [f"Bearer {widened}".encode()]})
        self.assertEqual((code, json.loads(body)["code"]), (403, "token_widened"))

        # A bearer token called at the host directly, before and after a revocation.
        code, out, err = yield self.orb("grant", fid, "--bearer", "--json")
        bearer = json.loads(out)
        session, _ = yield open_session(*peer.wire, self.network)
        self.addCleanup(session.transport.loseConnection)
        result = yield session.request(m.Invoke(fid=fidmod.from_text(fid), deadline_ms=10000,
                                                token=t.from_text(bearer["token"]), input=b"{}"), timeout_s=30)
        self.assertEqual(result.status_kind, ResultStatus.OK, result.log)

        # The owner revokes both: the gateway, the wire and the host refuse them.
        for revoked in (token, bearer["token"]):
            code, out, err = yield self.orb("revoke", revoked, "--tracker", tracker.wire_text, "--json")
            self.assertEqual(code, 0, out + err)
        code, out = yield self.invoke(tracker, fid, token)
        self.assertEqual(code, 7, out)
        self.assertIn("token_revoked", out)
        code, out = yield self.invoke(tracker, fid, token, wire=True)
        self.assertEqual(code, 7, out)
        code, out = yield self.invoke(tracker, fid, child.strip(), home="bob")  # under a revoked parent
        self.assertIn("token_revoked", out)

        @defer.inlineCallbacks
        def host_refuses():
            result = yield session.request(m.Invoke(fid=fidmod.from_text(fid), deadline_ms=10000,
                                                    token=t.from_text(bearer["token"]), input=b"{}"), timeout_s=30)
            return result.status_kind == ResultStatus.DENIED and result.log.startswith(b"token_revoked")

        yield eventually(host_refuses, timeout_s=20, what="the host refusing the revoked token")

    @defer.inlineCallbacks
    def test_a_private_function_is_hidden(self):
        """The API does not list a private function and its page shows only the fid, but to its owner."""
        tracker, _, fid = yield self.deploy_private()
        code, out, err = yield self.orb("ls", "--api", api(tracker), "--json")
        self.assertNotIn(fid, out)
        code, out, err = yield self.orb("info", fid, "--api", api(tracker), "--json", home="alice")
        self.assertEqual(code, 0, err)
        self.assertNotIn("manifest", json.loads(out))
        code, out, err = yield self.orb("info", fid, "--api", api(tracker), "--json")  # the owner proves its key
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["manifest"]["visibility"], "private")
        code, body, _ = yield get(f"{api(tracker)}/f/{fid}")
        self.assertEqual(json.loads(body), {"fid": fid, "visibility": "private", "dns_name": f"{fid}.orb",
                                            "call": f"/f/{fid}"})


def _signed(link, key, parent):
    import attrs

    return attrs.evolve(link, signature=key.sign(link.signed_bytes(parent.last.signature)))


@defer.inlineCallbacks
def post_with(url, body, headers):
    from io import BytesIO

    from twisted.internet import reactor
    from twisted.web.client import Agent, FileBodyProducer, readBody
    from twisted.web.http_headers import Headers

    response = yield Agent(reactor).request(b"POST", url.encode(), Headers(headers), FileBodyProducer(BytesIO(body)))
    data = yield readBody(response)
    return response.code, data, response.headers


@defer.inlineCallbacks
def get(url):
    from twisted.internet import reactor
    from twisted.web.client import Agent, readBody

    response = yield Agent(reactor).request(b"GET", url.encode())
    data = yield readBody(response)
    return response.code, data, response.headers
