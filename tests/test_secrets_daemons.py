"""
Secrets end to end with real daemons (RFC 9.12): ``orb secret set`` seals a
secret to every host of a deployed function; calls then return an HMAC
keyed by it, computed in the hosts' jails; the value appears in no daemon
log, no file of any data dir, and no output of the CLI.
"""

import hashlib
import hmac
import json
import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ResultStatus
from tests._daemons import DaemonTestMixin, sleep

SECRET = "daemon-test-secret-5f1c"

HMAC_FUNCTION = '''\
import hashlib
import hmac


def handler(event, context):
    key = context.secrets.get("API_KEY", "")
    if not key:
        return "no secret here"
    return hmac.new(key.encode(), event, hashlib.sha256).hexdigest()
'''


class SecretDaemonTests(DaemonTestMixin, TestCase):
    """A tracker and three peers, the real `orb` command, real jails."""

    timeout = 240

    @defer.inlineCallbacks
    def deploy(self, tracker, wait=True):
        path = os.path.join(self.net.base_dir, "signer")
        for argv in (("keygen",), ("init", path, "--template", "python", "--name", "signer")):
            code, _, err = yield self.orb(*argv)
            self.assertEqual(code, 0, err)
        with open(os.path.join(path, "main.py"), "w") as f:
            f.write(HMAC_FUNCTION)
        toml = os.path.join(path, "orb.toml")
        with open(toml) as f:
            text = f.read()
        head = text.split("[[sample]]", 1)[0]  # its samples were the adder's
        with open(toml, "w") as f:
            f.write(head + '\n[[sample]]\nname = "no secret at deploy"\ninput = "x"\noutput = "no secret here"\n')
        code, out, err = yield self.orb("deploy", path, "--tracker", tracker.wire_text, "--api", self.api(tracker),
                                        "--json", *(() if wait else ("--no-wait",)))
        self.assertEqual(code, 0, out + err)
        return json.loads(out)["fid"]

    def api(self, tracker):
        return f"http://127.0.0.1:{tracker.info['http']}"

    @defer.inlineCallbacks
    def status(self, tracker, fid):
        code, out, err = yield self.orb("secret", "status", fid, "--api", self.api(tracker), "--json")
        self.assertEqual(code, 0, err)
        self.assertNotIn(SECRET, out)
        return json.loads(out)

    @defer.inlineCallbacks
    def test_secret_set_then_calls_use_it_and_it_leaks_nowhere(self):
        """orb secret set on two hosts, sync to the third from the owner copy: every call gets it from its
        context; no log, file or output shows it."""
        from orb.devnet import open_session

        t1 = yield self.start_tracker("t1")
        peers = []
        for i in range(1, 4):
            p = yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", t1.wire_text)
            peers.append(p)
        yield sleep(2)
        fid = yield self.deploy(t1)
        wire = ("--tracker", t1.wire_text, "--api", self.api(t1))
        status = yield self.status(t1, fid)
        hosts = sorted(h["node_id"] for h in status["hosts"] if h["hosting"] and not h["is_tracker"])
        self.assertEqual(len(hosts), 3, status)
        code, out, err = yield self.orb("secret", "set", fid, f"API_KEY={SECRET}", "--host", hosts[0], "--host",
                                        hosts[1], "--json", *wire)
        self.assertEqual(code, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["names"], doc["owner_copy"]), (["API_KEY"], True))
        self.assertEqual(sorted(h["node_id"] for h in doc["hosts"] if h["ok"]), hosts[:2], doc)
        self.assertNotIn(SECRET, out + err)
        status = yield self.status(t1, fid)
        self.assertEqual(status["waiting"], hosts[2:])  # placed, but not sealed to
        code, out, err = yield self.orb("info", fid, "--api", self.api(t1))
        self.assertEqual(code, 0, err)
        self.assertIn("1 waiting for a sealed copy", out)
        code, out, err = yield self.orb("secret", "sync", fid, "--json", *wire)
        self.assertEqual(code, 0, out + err)
        self.assertEqual([h["node_id"] for h in json.loads(out)["hosts"] if h["ok"]], hosts[2:])
        self.assertNotIn(SECRET, out + err)

        expected = hmac.new(SECRET.encode(), b"payload", hashlib.sha256).hexdigest().encode()
        raw = fidmod.from_text(fid)
        session, _ = yield open_session(*t1.wire, self.network)
        self.addCleanup(session.disconnect)
        outputs = []

        @defer.inlineCallbacks
        def every_call_signs():
            del outputs[:]
            for _ in range(6):
                result = yield session.request(m.Invoke(fid=raw, deadline_ms=5000, token=b"", input=b"payload"),
                                               timeout_s=15)
                outputs.append((result.status_kind, result.output))
            return all(o == (ResultStatus.OK, expected) for o in outputs)

        for _ in range(60):
            ok = yield every_call_signs()
            if ok:
                break
            yield sleep(0.5)
        self.assertTrue(ok, outputs)

        status = yield self.status(t1, fid)
        self.assertEqual(status["waiting"], [])
        self.assertGreaterEqual(sum(h["sealed"] for h in status["hosts"]), 3)

        # Nowhere in the clear: daemon output (logs), and every file of every data dir (registries, indexes).
        for daemon in [t1, *peers]:
            self.assertNotIn(SECRET, daemon.text, daemon.data_dir)
            self.assertEqual(daemon.tracebacks, 0, daemon.text[-3000:])
        for root, _, files in os.walk(self.net.base_dir):
            for name in files:
                path = os.path.join(root, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    self.assertNotIn(SECRET.encode(), f.read(), path)

    @defer.inlineCallbacks
    def test_a_sealing_node_seals_to_the_waiting_host(self):
        """A peer run with --owner-key seals the secret to the host the owner left out, without the owner acting."""
        t1 = yield self.start_tracker("t1")
        for i in range(1, 4):
            yield self.start_peer(f"p{i}", "--listen", f"tcp:0:interface=127.{i}.0.1", "--tracker", t1.wire_text)
        yield sleep(2)
        fid = yield self.deploy(t1)
        status = yield self.status(t1, fid)
        hosts = sorted(h["node_id"] for h in status["hosts"] if h["hosting"] and not h["is_tracker"])
        code, out, err = yield self.orb("secret", "set", fid, f"API_KEY={SECRET}", "--host", hosts[0],
                                        "--tracker", t1.wire_text, "--api", self.api(t1))
        self.assertEqual(code, 0, out + err)
        status = yield self.status(t1, fid)
        self.assertEqual(len(status["waiting"]), 2)
        owner_key = os.path.join(self.net.base_dir, "owner", "owner.key")
        sealer = yield self.start_peer("sealer", "--listen", "tcp:0:interface=127.9.0.1", "--tracker", t1.wire_text,
                                       "--owner-key", owner_key, "--max-functions", "1", "--runtime", "exec")
        for _ in range(60):
            status = yield self.status(t1, fid)
            if not status["waiting"]:
                break
            yield sleep(0.5)
        self.assertEqual(status["waiting"], [], status)
        self.assertNotIn(SECRET, sealer.text)
        self.assertEqual(sealer.tracebacks, 0, sealer.text[-3000:])

    @defer.inlineCallbacks
    def test_secret_cli_refuses_a_non_owner_and_unknown_hosts(self):
        """orb secret set with another key is refused (exit 7); an unknown --host is exit 10; bad pairs exit 2."""
        t1 = yield self.start_tracker("t1")
        yield self.start_peer("p1", "--listen", "tcp:0:interface=127.1.0.1", "--tracker", t1.wire_text)
        yield sleep(2)
        fid = yield self.deploy(t1, wait=False)
        wire = ("--tracker", t1.wire_text, "--api", self.api(t1))
        code, _, err = yield self.orb("keygen", home="thief")
        self.assertEqual(code, 0, err)
        code, out, err = yield self.orb("secret", "set", fid, "A=1", "--all-hosts", *wire, home="thief")
        self.assertEqual(code, 7, out + err)
        code, out, err = yield self.orb("secret", "set", fid, "A=1", "--host", "ab" * 32, *wire)
        self.assertEqual(code, 10, out + err)
        code, out, err = yield self.orb("secret", "set", fid, "not a pair", "--all-hosts", *wire)
        self.assertEqual(code, 2, out + err)
        code, out, err = yield self.orb("secret", "set", fid, "A=1", *wire)
        self.assertEqual(code, 2, out + err)
