"""
DEPLOY at the tracker (orb.tracker.deploy): every refusal a deployer can
meet before its package is fetched, each with its own code and message.
The whole flow runs against real daemons in tests/test_functions.py.
"""

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import fid as fidmod
from orb.protocol import messages as m
from orb.protocol.codes import ErrorCode
from orb.protocol.deploy import sign_deploy
from orb.tracker.deploy import Deployments
from tests import _records as records

OWNER = records.key("deploy-owner")
FID = fidmod.fid_for(b"deploy-test")


class _Record:
    """What a handler sees of a session: refusals and answers are kept."""

    name = "deployer"
    node_id = b"\x07" * 32

    def __init__(self):
        self.refused = []

    def refuse(self, request_id, code, text):
        self.refused.append((code, text))


class _NoStore:
    def has(self, raw):
        return False


def deploy_message(key=OWNER, manifest=None, size=4096, issued_at=1000, fid=FID, signer=None):
    manifest = manifest if manifest is not None else records.manifest_bytes()
    sig = sign_deploy(signer or key, fid, manifest, size, issued_at)
    return m.Deploy(fid=fid, owner_key=key.public_bytes, manifest=manifest, package_size=size, issued_at=issued_at,
                    signature=sig)


class CheckTests(SynchronousTestCase):
    def setUp(self):
        clock = Clock()
        clock.advance(1000)
        self.deployments = Deployments(clock, None, None, None, _NoStore(), None, None, max_package_bytes=1 << 20)

    def refusal(self, message):
        record = _Record()
        fetched = []
        self.deployments.fetch = lambda *a: fetched.append(a)
        self.deployments.on_deploy(record, message, 5)
        self.assertEqual(fetched, [], "a refused deploy fetches nothing")
        (refusal,) = record.refused
        return refusal

    def test_oversized_package(self):
        """A package over the tracker's cap is refused with too_large, naming the cap and the option."""
        code, text = self.refusal(deploy_message(size=(1 << 20) + 1))
        self.assertEqual(code, ErrorCode.TOO_LARGE)
        self.assertIn("--max-package-bytes", text)

    def test_bad_signature(self):
        """A deploy statement signed by another key is refused with denied."""
        code, text = self.refusal(deploy_message(signer=records.key("thief")))
        self.assertEqual(code, ErrorCode.DENIED)
        self.assertIn("signature", text)

    def test_tampered_statement(self):
        """Changing the size after signing breaks the signature: denied."""
        code, _ = self.refusal(attrs.evolve(deploy_message(), package_size=8192))
        self.assertEqual(code, ErrorCode.DENIED)

    def test_manifest_that_does_not_validate(self):
        """A manifest that does not validate is refused with invalid, naming the field."""
        bad = records.manifest_bytes().replace(b'"runtime":"python"', b'"runtime":"cobol"')
        code, text = self.refusal(deploy_message(manifest=bad))
        self.assertEqual(code, ErrorCode.INVALID)
        self.assertIn("runtime", text)

    def test_manifest_not_canonical(self):
        """A manifest with whitespace (not its canonical bytes) is refused: the signature covers exact bytes."""
        code, text = self.refusal(deploy_message(manifest=records.manifest_bytes().replace(b",", b", ", 1)))
        self.assertEqual(code, ErrorCode.INVALID)
        self.assertIn("canonical", text)

    def test_future_statement(self):
        """A statement issued in the future (a skewed clock) is refused with invalid."""
        code, text = self.refusal(deploy_message(issued_at=5000))
        self.assertEqual(code, ErrorCode.INVALID)
        self.assertIn("clock", text)

    def test_invalid_fid(self):
        """A fid that is not one (an unknown algorithm byte) is refused with invalid."""
        code, _ = self.refusal(attrs.evolve(deploy_message(), fid=b"\x09" + bytes(32)))
        self.assertEqual(code, ErrorCode.INVALID)
