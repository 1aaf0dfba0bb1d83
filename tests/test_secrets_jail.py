"""
A function reads its secrets from its context in a real jail (RFC 9.12):
never from the environment, and the values appear in no log, no result
log, and no environment of the executor's processes.
"""

import hashlib
import hmac
import json
import os

from twisted.internet import defer
from twisted.logger import capturedLogs

from orb.protocol.codes import ResultStatus

from .hostile._support import JailTestCase

SECRET = "s3cret-value-0f-the-jail-test"

READER = """
import hashlib
import hmac
import json
import os
import sys


def handler(event, context):
    key = context.secrets.get("API_KEY", "")
    try:
        context.secrets["OTHER"] = "x"
        writable = True
    except TypeError:
        writable = False
    print("handling a call", file=sys.stderr)
    return json.dumps({
        "hmac": hmac.new(key.encode(), event, hashlib.sha256).hexdigest(),
        "names": sorted(context.secrets),
        "env": sorted(os.environ),
        "writable": writable,
    })
"""


class SecretsInTheJailTests(JailTestCase):
    """context.secrets in a real jail, per call and in a warm worker."""

    @defer.inlineCallbacks
    def run_with_secret(self, reuse):
        pkg = self.make_package({"main.py": READER})
        with capturedLogs() as events:
            result = yield self.executor.invoke("fid-test", pkg, _spec(reuse), b"the input", deadline_s=5,
                                                request_id="secret-call", secrets={"API_KEY": SECRET})
            bare = yield self.executor.invoke("fid-test", pkg, _spec(reuse), b"the input", deadline_s=5,
                                              request_id="bare-call")
        self.assertEqual(result.status, ResultStatus.OK, result)
        doc = json.loads(result.output)
        self.assertEqual(doc["hmac"], hmac.new(SECRET.encode(), b"the input", hashlib.sha256).hexdigest())
        self.assertEqual(doc["names"], ["API_KEY"])
        self.assertFalse(doc["writable"], "context.secrets must be read-only")
        self.assertEqual(doc["env"], [], "a function's environment is empty")
        self.assertEqual(json.loads(bare.output)["names"], [], "the next call must not see the last one's secrets")
        self.assertIn(b"handling a call", result.log)
        for where, text in (("result log", result.log), ("result message", result.message.encode()),
                            ("daemon log", repr(events).encode()), ("output of the bare call", bare.output)):
            self.assertNotIn(SECRET.encode(), text, where)
        self.assertNotIn(SECRET, repr(dict(os.environ)))
        for pid in (os.getpid(), self.hello["pid"]):
            with open(f"/proc/{pid}/environ", "rb") as f:
                self.assertNotIn(SECRET.encode(), f.read(), f"environment of {pid}")

    def test_per_call_function_reads_its_secret_from_its_context(self):
        """A per-call function computes an HMAC with context.secrets; the value leaks nowhere."""
        return self.run_with_secret("per-call")

    def test_warm_worker_reads_its_secret_from_its_context(self):
        """A warm (per-function) worker gets each call's secrets only with that call."""
        return self.run_with_secret("per-function")


def _spec(reuse):
    from orb.exec import RuntimeSpec

    return RuntimeSpec(runtime="python", entry="main.py", reuse=reuse)
