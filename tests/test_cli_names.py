"""
The names verbs of the ``orb`` command (orb.cli._names) as a user runs
them: the argument forms (TIME, NAME-OR-FID) without sockets, then the
real ``orb name``, ``orb update``, ``orb deprecate``, ``orb undeprecate``
and ``orb info`` against a real ``twistd orb-tracker`` with a peer hosting
the functions, with their --json documents and exit statuses.
"""

import json
import os
import re

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from orb.cli import _names, _ui
from orb.identity import NodeKey
from orb.protocol import fid as fidmod
from orb.protocol.codes import ErrorCode
from orb.protocol.messages import StatementAck
from orb.protocol.names import make_name, owner_label
from tests._daemons import DaemonTestMixin, eventually

NOW = 1_800_000_000
FID = fidmod.to_text(fidmod.fid_for(b"cli-names"))


class TimeArgumentTests(SynchronousTestCase):
    def test_unix_iso_and_relative_times(self):
        """--sunset takes Unix seconds, ISO 8601 (UTC unless an offset says otherwise) and +Ns/m/h/d."""
        cases = {"1900000000": 1_900_000_000, "+30s": NOW + 30, "+10m": NOW + 600, "+2h": NOW + 7200,
                 "+7d": NOW + 7 * 86400}
        for text, expected in cases.items():
            self.assertEqual(_names.parse_time(text, NOW), expected, text)
        self.assertEqual(_names.parse_time("2026-12-01T12:00:00Z", NOW), 1_796_126_400)
        self.assertEqual(_names.parse_time("2026-12-01T12:00:00", NOW), 1_796_126_400)
        self.assertEqual(_names.parse_time("2026-12-01T14:00:00+02:00", NOW), 1_796_126_400)

    def test_bad_times_say_what_is_accepted(self):
        """A time that is none of the forms is refused with the forms listed."""
        for text in ("tomorrow", "+5y", "+m", "-10m", "12:00"):
            with self.assertRaises(ValueError) as e:
                _names.parse_time(text, NOW)
            self.assertIn("+10m", str(e.exception))


class TargetArgumentTests(SynchronousTestCase):
    label = owner_label(NodeKey.generate().public_bytes)

    def test_fids_and_the_three_name_forms(self):
        """NAME-OR-FID is a fid, or name (the caller's), name.<owner> or name.<owner>.orb, any case."""
        self.assertEqual(_names.parse_target(FID, self.label), _names.Target(fid=FID))
        other = owner_label(NodeKey.generate().public_bytes)
        for text, owner in (("adder", self.label), (f"adder.{other}", other), (f"Adder.{other.upper()}.ORB.", other)):
            self.assertEqual(_names.parse_target(text, self.label), _names.Target(owner_label=owner, name="adder"))
        self.assertTrue(_names.is_name("adder") and _names.is_name(f"adder.{other}.orb"))
        self.assertFalse(_names.is_name(FID))

    def test_bad_names_are_usage_errors(self):
        """A malformed name, a bad owner label, or a bare name without a key: exit status 2 with the forms."""
        for text, own in (("-adder", self.label), ("a_b", self.label), (f"adder.{self.label[:-1]}", self.label),
                          ("a.b.c.d", self.label), ("adder", None)):
            with self.assertRaises(_ui.CommandError) as e:
                _names.parse_target(text, own)
            self.assertEqual(e.exception.exit_code, _ui.EXIT_USAGE, text)


class _Session:
    """A protocol whose ``request`` answers from a script: what a tracker holds, as STATEMENT_ACK."""

    def __init__(self, held, refuse=None):
        self.held = held
        self.refuse = refuse
        self.sent = []

    def request(self, message, timeout_s=None):
        self.sent.append(message)
        if self.refuse is not None:
            return defer.succeed(StatementAck(status=int(self.refuse), seq=self.held, text="no"))
        if message.seq <= self.held:
            return defer.succeed(StatementAck(status=int(ErrorCode.STALE), seq=self.held, text="stale"))
        self.held = message.seq
        return defer.succeed(StatementAck(status=0, seq=self.held, text=""))


class StatementSeqTests(SynchronousTestCase):
    key = NodeKey.generate()

    def build(self, seq):
        return make_name(self.key, "adder", seq, FID)

    def test_a_stale_answer_teaches_the_held_seq(self):
        """Without the API's seq, a first NAME answered stale is sent again with one above the held seq."""
        session = _Session(held=41)
        ack, seq = self.successResultOf(_names.send_statement(session, self.build, 1, "NAME", {}))
        self.assertEqual((ack.status, seq, [m.seq for m in session.sent]), (0, 42, [1, 42]))
        session = _Session(held=0)
        self.assertEqual(self.successResultOf(_names.send_statement(session, self.build, 1, "NAME", {}))[1], 1)

    def test_every_refusal_has_its_exit_status(self):
        """denied, invalid and stale exit 7, not_found 10, gone 12, busy 8; the code is the error's kind."""
        expected = {ErrorCode.DENIED: _ui.EXIT_REFUSED, ErrorCode.INVALID: _ui.EXIT_REFUSED,
                    ErrorCode.NOT_FOUND: _ui.EXIT_NOT_FOUND, ErrorCode.GONE: _ui.EXIT_GONE,
                    ErrorCode.BUSY: _ui.EXIT_BUSY}
        for code, exit_code in expected.items():
            failure = self.failureResultOf(_names.send_statement(_Session(3, refuse=code), self.build, 4, "NAME", {}),
                                           _ui.CommandError)
            self.assertEqual((failure.value.exit_code, failure.value.kind), (exit_code, code.name.lower()))
        racing = _Session(held=5)
        racing.request = lambda message, timeout_s=None: defer.succeed(
            StatementAck(status=int(ErrorCode.STALE), seq=message.seq + 1, text="stale"))
        failure = self.failureResultOf(_names.send_statement(racing, self.build, 1, "NAME", {}), _ui.CommandError)
        self.assertEqual((failure.value.exit_code, failure.value.kind), (_ui.EXIT_REFUSED, "stale"))


HANDLER = '''\
import json

VERSION = VERSION_TEXT  # each version is another package: another fid


def handler(event, context):
    args = json.loads(event or b"{}")
    return {"sum": args["a"] + args["b"]}
'''


def write_function(path, version):
    """An adder whose answer says which version ran."""
    with open(os.path.join(path, "main.py"), "w") as f:
        f.write(HANDLER.replace("VERSION_TEXT", repr(version)))
    with open(os.path.join(path, "orb.toml")) as f:
        toml = f.read()
    toml = re.sub(r'(?m)^version = ".*"', f'version = "{version}"', toml)
    toml = re.sub(r"(?m)^replicas = \d+", "replicas = 1", toml)
    with open(os.path.join(path, "orb.toml"), "w") as f:
        f.write(toml)


class NamesCommandTests(DaemonTestMixin, TestCase):
    """The verbs against a real tracker and one peer."""

    timeout = 240

    @defer.inlineCallbacks
    def setUp(self):
        self.tracker = yield self.start_tracker("t1")
        self.peer = yield self.start_peer("p1", "--tracker", self.tracker.wire_text)
        self.api = f"http://127.0.0.1:{self.tracker.info['http']}"
        code, _, err = yield self.orb("keygen")
        self.assertEqual(code, 0, err)
        self.dir = os.path.join(self.net.base_dir, "adder")
        code, _, err = yield self.orb("init", self.dir, "--template", "python", "--name", "adder")
        self.assertEqual(code, 0, err)
        write_function(self.dir, "1.0.0")

    def run_orb(self, *argv, home="owner"):
        where = ("--api", self.api) if argv[0] == "info" else ("--tracker", self.tracker.wire_text, "--api", self.api)
        return self.orb(*argv, *where, home=home)

    @defer.inlineCallbacks
    def json_of(self, *argv, expect=0, home="owner"):
        code, out, err = yield self.run_orb(*argv, "--json", home=home)
        self.assertEqual(code, expect, out + err)
        return json.loads(out)

    @defer.inlineCallbacks
    def test_update_name_deprecate_undeprecate_and_info(self):
        """update deploys and moves the name (old -> new), info shows every seq, deprecate/undeprecate take effect."""
        first = yield self.json_of("update", self.dir)
        self.assertEqual((first["old_fid"], first["seq"], first["named"]["name"]), (None, 1, "adder"))
        label = first["named"]["owner_label"]
        write_function(self.dir, "2.0.0")
        second = yield self.json_of("update", self.dir)
        self.assertEqual((second["old_fid"], second["seq"]), (first["fid"], 2))
        self.assertNotEqual(second["fid"], first["fid"])
        code, out, err = yield self.orb("info", f"adder.{label}.orb", "--api", self.api)
        self.assertEqual(code, 0, err)
        self.assertIn(first["fid"], out)
        self.assertIn("superseded", out)
        info = yield self.json_of("info", "adder")
        self.assertEqual([(h["seq"], h["fid"], h["status"]) for h in info["history"]],
                         [(2, second["fid"], "current"), (1, first["fid"], "superseded")])
        # Point the name back at the first version by hand, then forward again.
        named = yield self.json_of("name", "adder", first["fid"])
        self.assertEqual((named["seq"], named["old_fid"]), (3, second["fid"]))
        named = yield self.json_of("name", f"adder.{label}", second["fid"])
        self.assertEqual(named["seq"], 4)
        # Deprecate what the name serves now: the name falls back to the first version.
        dep = yield self.json_of("deprecate", "adder", "--successor", first["fid"], "--sunset", "+1h")
        self.assertEqual((dep["fid"], dep["successor"], dep["deprecated"]), (second["fid"], first["fid"], True))
        info = yield self.json_of("info", second["fid"])
        self.assertEqual(info["deprecation"]["successor"], first["fid"])
        code, out, _ = yield self.orb("info", second["fid"], "--api", self.api)
        self.assertIn("deprecated", out)
        info = yield self.json_of("info", "adder")
        self.assertEqual((info["serving"], info["history"][0]["status"]), (first["fid"], "deprecated"))
        # Undeprecate the name's newest deprecated version.
        undone = yield self.json_of("undeprecate", "adder")
        self.assertEqual((undone["fid"], undone["deprecated"]), (second["fid"], False))
        info = yield self.json_of("info", second["fid"])
        self.assertIsNone(info["deprecation"] and info["deprecation"].get("deprecated") or None)

    @defer.inlineCallbacks
    def test_refusals_have_their_exit_statuses(self):
        """Another owner's name is refused (2 or denied 7), an unknown fid not_found (10), past the sunset gone (12)."""
        first = yield self.json_of("update", self.dir)
        label = first["named"]["owner_label"]
        code, _, err = yield self.orb("keygen", home="mallory")
        self.assertEqual(code, 0, err)
        doc = yield self.json_of("name", f"adder.{label}", first["fid"], expect=_ui.EXIT_USAGE, home="mallory")
        self.assertEqual(doc["error"]["kind"], "usage")
        doc = yield self.json_of("deprecate", first["fid"], expect=_ui.EXIT_REFUSED, home="mallory")
        self.assertEqual(doc["error"]["kind"], "denied")
        unknown = fidmod.to_text(fidmod.fid_for(b"never deployed"))
        doc = yield self.json_of("name", "adder", unknown, expect=_ui.EXIT_NOT_FOUND)
        self.assertEqual(doc["error"]["kind"], "not_found")
        doc = yield self.json_of("deprecate", "nothing", expect=_ui.EXIT_NOT_FOUND)
        self.assertEqual(doc["error"]["kind"], "not_found")
        code, _, err = yield self.run_orb("deprecate", first["fid"], "--sunset", "yesterday")
        self.assertEqual(code, 2, err)
        self.assertIn("+10m", err)
        sunset = yield self.json_of("deprecate", first["fid"], "--sunset", "+3s")
        self.assertTrue(sunset["sunset"])

        @defer.inlineCallbacks
        def gone():
            code, doc = yield self.tracker.get_json(f"/api/v1/functions/{first['fid']}")
            return code == 410

        yield eventually(gone, timeout_s=20, what="the fid gone at the tracker")
        doc = yield self.json_of("undeprecate", first["fid"], expect=_ui.EXIT_GONE)
        self.assertEqual(doc["error"]["kind"], "gone")
        self.assertIn("sunset", doc["error"]["message"])
        doc = yield self.json_of("info", first["fid"], expect=_ui.EXIT_GONE)
        self.assertEqual(doc["error"]["kind"], "gone")
        # Without the API, the stale answer teaches the seq: a new NAME still goes through.
        write_function(self.dir, "3.0.0")
        code, out, err = yield self.orb("update", self.dir, "--tracker", self.tracker.wire_text, "--json")
        self.assertEqual(code, 0, out + err)
        self.assertEqual(json.loads(out)["seq"], 2)
