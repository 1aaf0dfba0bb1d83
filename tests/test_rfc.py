"""
docs/rfc-orb.md and tests/vectors/v1.json against the codec: the RFC's
layout tables and registries must equal the declarations, and every
vector must decode and re-encode byte for byte.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import messages as m
from orb.protocol import spec
from orb.protocol.frame import FrameDecoder, encode_frame, network_magic


def rfc_text():
    with open(spec.RFC_PATH) as f:
        return f.read()


def vectors():
    with open(spec.VECTORS_PATH) as f:
        return json.load(f)


class RfcTablesTests(SynchronousTestCase):
    def test_generated_blocks_are_current(self):
        """Run `python -m orb.protocol.spec update` after changing the wire."""
        text = rfc_text()
        self.assertEqual(spec.render(text, spec.vectors_document()), text)

    def test_every_message_has_a_layout_table(self):
        """Every message type, the header and the records have a layout table in the RFC."""
        present = spec.markers(rfc_text())
        for message_type in m.MessageType:
            self.assertIn(("layout", message_type.name), present, message_type.name)
        for name in ("header", "records"):
            self.assertIn(("layout", name), present)

    def test_every_registry_is_listed(self):
        """Every code-point registry, the vectors and the transcript are in the RFC."""
        present = spec.markers(rfc_text())
        for name in spec.REGISTRY_DOCS:
            self.assertIn(("registry", name), present, name)
        self.assertIn(("vectors", None), present)
        self.assertIn(("transcript", None), present)

    def test_every_field_has_a_meaning(self):
        """No layout table row leaves a field's meaning blank."""
        for message_type, cls in m.MESSAGES.items():
            docs = spec.FIELD_DOCS[message_type.name]
            for sub in cls.BODY.subcons:
                if sub.name != "ext":
                    self.assertTrue(docs.get(sub.name), f"{message_type.name}.{sub.name}")

    def test_a_changed_declaration_is_caught(self):
        """The check is live: a table that disagrees with the code is rewritten."""
        text = rfc_text()
        start = text.index("<!-- layout:PING -->")
        tampered = text[:start] + text[start:].replace("| u64 | nonce |", "| u32 | nonce |", 1)
        self.assertNotEqual(tampered, text)
        self.assertEqual(spec.render(tampered, spec.vectors_document()), text)


class VectorTests(SynchronousTestCase):
    def test_vectors_file_is_current(self):
        """tests/vectors/v1.json is what the codec produces today."""
        self.assertEqual(vectors(), json.loads(json.dumps(spec.vectors_document())))

    def test_every_type_has_a_vector(self):
        """An implementer finds a vector for every message type."""
        covered = {v["type"] for v in vectors()["vectors"]}
        self.assertEqual(covered, {t.name for t in m.MessageType})

    def test_vectors_decode_and_reencode_byte_for_byte(self):
        """Every vector decodes to its fields and encodes back to the same bytes."""
        doc = vectors()
        magic = bytes.fromhex(doc["magic"])
        self.assertEqual(magic, network_magic(doc["network"]))
        for vector in doc["vectors"]:
            data = bytes.fromhex(vector["hex"])
            (frame,) = FrameDecoder(magic).feed(data)
            expected = spec.message_from_json(vector["type"], vector["fields"])
            self.assertEqual(frame.message, expected, vector["name"])
            self.assertEqual((frame.request_id, frame.flags), (vector["request_id"], vector["flags"]))
            self.assertEqual(encode_frame(magic, expected, vector["request_id"], vector["flags"]), data, vector["name"])

    def test_transcript_is_a_complete_handshake(self):
        """The transcript frames decode, in the order a real session opening sends them."""
        doc = vectors()
        magic = bytes.fromhex(doc["magic"])
        types = []
        for step in doc["transcript"]:
            (frame,) = FrameDecoder(magic).feed(bytes.fromhex(step["hex"]))
            self.assertEqual(frame.message, spec.message_from_json(step["type"], step["fields"]))
            types.append(frame.message.TYPE.name)
        self.assertEqual(types, ["HELLO", "HELLO_ACK", "PING", "ADDR", "GETADDR", "ANNOUNCE", "PONG", "ADDR"])

    def test_transcript_shows_what_a_tracker_sends_after_ready(self):
        """The first frame after HELLO_ACK is not the GETADDR answer; only request id and flag find it."""
        steps = vectors()["transcript"]
        to_peer = [s for s in steps if s["direction"] == "tracker -> peer"]
        self.assertEqual([s["type"] for s in to_peer], ["HELLO_ACK", "PING", "ADDR", "ADDR"])
        (getaddr,) = [s for s in steps if s["type"] == "GETADDR"]
        answers = [s for s in to_peer if s["flags"] & 1 and s["request_id"] == getaddr["request_id"]]
        self.assertEqual([s["type"] for s in answers], ["ADDR"])
        self.assertIsNot(answers[0], to_peer[1])
        self.assertEqual(to_peer[2]["request_id"], 0)  # the unsolicited ADDR is a notification
        (hello_ack,) = [s for s in steps if s["type"] == "HELLO_ACK"]
        self.assertTrue(hello_ack["fields"]["listen"], "HELLO_ACK lists the tracker's listen address")

    def test_transcript_addr_answer_has_no_duplicate_pairs(self):
        """The GETADDR answer in the transcript lists each (node id, address) pair once."""
        answer = vectors()["transcript"][-1]["fields"]["entries"]
        pairs = [(e["node_id"], e["host"], e["port"]) for e in answer]
        self.assertEqual(len(pairs), len(set(pairs)))

    def test_json_numbers_stay_within_2_53(self):
        """Every number in v1.json survives JavaScript's JSON.parse: u64 values are decimal strings."""
        def walk(value):
            if isinstance(value, bool):
                return
            if isinstance(value, int):
                self.assertLessEqual(abs(value), 2**53)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        doc = vectors()
        walk(doc)
        (hello,) = [v for v in doc["vectors"] if v["type"] == "HELLO"]
        self.assertEqual(hello["fields"]["nonce"], "81985529216486895")
        (name,) = [v for v in doc["vectors"] if v["type"] == "NAME"]
        self.assertIsInstance(name["fields"]["seq"], str)

    def test_relay_vector_carries_a_real_request(self):
        """The RELAY vector's inner frame is a request with a nonzero request id, as Section 4.7 requires."""
        from orb.protocol.session import REQUEST_TYPES

        doc = vectors()
        (relay,) = [v for v in doc["vectors"] if v["type"] == "RELAY"]
        (inner,) = FrameDecoder(bytes.fromhex(doc["magic"])).feed(bytes.fromhex(relay["fields"]["frame"]))
        self.assertIn(inner.message.TYPE, REQUEST_TYPES)
        self.assertNotEqual(inner.request_id, 0)
        self.assertFalse(inner.is_response)

    def test_appendix_shows_every_value_in_full(self):
        """No value in the appendices is shortened: every hex field of v1.json appears whole."""
        text = rfc_text()
        self.assertNotIn("...", text[text.index("<!-- vectors -->"):text.index("<!-- /transcript -->")])
        flat = "".join(line.strip() for line in text.splitlines())
        for vector in vectors()["vectors"]:
            for key, value in vector["fields"].items():
                if isinstance(value, str) and len(value) > 64:
                    self.assertIn(value, flat, f"{vector['name']}.{key}")

    def test_name_vector_signature_verifies(self):
        """The NAME vector's signature verifies over the signed bytes of Section 9.3."""
        from orb.identity import verify_signature

        (vector,) = [v for v in vectors()["vectors"] if v["type"] == "NAME"]
        name = spec.message_from_json("NAME", vector["fields"])
        self.assertTrue(verify_signature(name.owner_key, name.signature, name.signed_bytes()))


class PackageVectorTests(SynchronousTestCase):
    def test_package_vector_is_what_the_packer_makes(self):
        """Appendix C's archive, SHA-256 and fid are what packing its files and manifest gives."""
        import hashlib

        from orb.protocol import fid
        from orb.protocol.package import PackageFile, pack, unpack

        pkg = vectors()["package"]
        files = [PackageFile(e["path"], bytes.fromhex(e["data"]), e["mode"] == "0755")
                 for e in pkg["entries"] if e["path"] != "orb-manifest.json"]
        data = pack(files, pkg["manifest"])
        self.assertEqual(data.hex(), pkg["hex"])
        self.assertEqual(hashlib.sha256(data).hexdigest(), pkg["sha256"])
        self.assertEqual(fid.to_text(bytes.fromhex(pkg["fid_bytes"])), pkg["fid"])
        self.assertEqual(unpack(data)[1], pkg["manifest"])
        self.assertIn(pkg["fid"], rfc_text())
        self.assertIn(("package", None), spec.markers(rfc_text()))

    def test_package_vector_splits_a_long_path(self):
        """The vector exercises the ustar name/prefix split of Section 9.2."""
        split = [e for e in vectors()["package"]["entries"] if e["ustar_prefix"]]
        self.assertTrue(split)
        for e in split:
            self.assertGreater(len(e["path"].encode()), 100)
            self.assertEqual(e["ustar_prefix"] + "/" + e["ustar_name"], e["path"])


class CanonicalJsonVectorTests(SynchronousTestCase):
    def test_jcs_vector(self):
        """Section 2.7's vector is RFC 8785 output: non-ASCII unescaped, keys in UTF-16 order."""
        import hashlib

        import rfc8785

        v = vectors()["canonical_json"]
        canonical = rfc8785.dumps(json.loads(v["input"]))
        self.assertEqual(canonical.hex(), v["canonical_hex"])
        self.assertEqual(canonical.decode("utf-8"), v["canonical"])
        self.assertEqual(hashlib.sha256(canonical).hexdigest(), v["sha256"])
        self.assertIn("café — ünïcode", v["canonical"])
        self.assertLess(v["canonical"].index("\U0001f600"), v["canonical"].index("\ufb01"))
        self.assertIn(("jcs", None), spec.markers(rfc_text()))
