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
        present = spec.markers(rfc_text())
        for message_type in m.MessageType:
            self.assertIn(("layout", message_type.name), present, message_type.name)
        for name in ("header", "records"):
            self.assertIn(("layout", name), present)

    def test_every_registry_is_listed(self):
        present = spec.markers(rfc_text())
        for name in spec.REGISTRY_DOCS:
            self.assertIn(("registry", name), present, name)
        self.assertIn(("vectors", None), present)
        self.assertIn(("transcript", None), present)

    def test_every_field_has_a_meaning(self):
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
        self.assertEqual(vectors(), json.loads(json.dumps(spec.vectors_document())))

    def test_every_type_has_a_vector(self):
        covered = {v["type"] for v in vectors()["vectors"]}
        self.assertEqual(covered, {t.name for t in m.MessageType})

    def test_vectors_decode_and_reencode_byte_for_byte(self):
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
        doc = vectors()
        magic = bytes.fromhex(doc["magic"])
        types = []
        for step in doc["transcript"]:
            (frame,) = FrameDecoder(magic).feed(bytes.fromhex(step["hex"]))
            self.assertEqual(frame.message, spec.message_from_json(step["type"], step["fields"]))
            types.append(frame.message.TYPE.name)
        self.assertEqual(types, ["HELLO", "HELLO_ACK", "PING", "PONG", "GETADDR", "ADDR"])

    def test_name_vector_signature_verifies(self):
        from orb.identity import verify_signature

        (vector,) = [v for v in vectors()["vectors"] if v["type"] == "NAME"]
        name = spec.message_from_json("NAME", vector["fields"])
        self.assertTrue(verify_signature(name.owner_key, name.signature, name.signed_bytes()))
