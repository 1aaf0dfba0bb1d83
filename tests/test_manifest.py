"""
The function manifest (orb.toml and orb-manifest.json, RFC 9.7): defaults,
the canonical JSON, samples, and a message naming field, value and fix for
every bad field.
"""

import json

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from orb.protocol import manifest as mf

GOOD = """
name = "adder"
version = "1.0.0"
runtime = "python"

[[sample]]
input_json = { a = 2, b = 3 }
output_json = { sum = 5 }
"""

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010, exclude_categories=()), max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)


def toml(extra="", base=GOOD):
    """GOOD with ``extra`` lines placed before its first [[sample]]."""
    head, sep, tail = base.partition("[[sample]]")
    return head + extra + "\n" + sep + tail


class DefaultsTests(SynchronousTestCase):
    def test_defaults_are_filled_in(self):
        """A minimal orb.toml gets entry main.py, 10 s, 256 MiB, per-call, 3 replicas, public, not pure."""
        m = mf.from_toml(GOOD)
        self.assertEqual((m.entry, m.timeout_ms, m.memory_mb, m.isolation, m.replicas, m.visibility),
                         ("main.py", 10_000, 256, "per-call", 3, "public"))
        self.assertEqual((m.idempotent, m.pure, m.bytecode, m.description), (False, False, None, ""))

    def test_exec_entry_defaults_to_main(self):
        """An exec function's entry defaults to `main`."""
        self.assertEqual(mf.from_toml(GOOD.replace('"python"', '"exec"')).entry, "main")

    def test_every_field_is_read(self):
        """Each orb.toml field lands in the manifest as written."""
        m = mf.from_toml(toml('entry = "src/fn.py"\ndescription = "adds"\ntimeout_ms = 1500\nmemory_mb = 64\n'
                              'isolation = "per-function"\nreplicas = 5\nidempotent = true\npure = true\n'
                              'visibility = "private"'))
        self.assertEqual((m.entry, m.description, m.timeout_ms, m.memory_mb, m.isolation, m.replicas,
                          m.idempotent, m.pure, m.visibility),
                         ("src/fn.py", "adds", 1500, 64, "per-function", 5, True, True, "private"))


class CanonicalJsonTests(SynchronousTestCase):
    def test_json_is_jcs_of_every_member(self):
        """orb-manifest.json is the JCS bytes of an object listing every member, defaults included."""
        m = mf.from_toml(GOOD)
        data = mf.canonical_bytes(m)
        doc = json.loads(data)
        self.assertEqual(data, rfc8785.dumps(doc))
        self.assertEqual(set(doc), set(mf.JSON_FIELDS) - set(mf.OPTIONAL_JSON_FIELDS))
        self.assertEqual(doc["manifest_version"], 1)
        self.assertEqual(doc["samples"], [{"name": "", "input": {"text": '{"a":2,"b":3}'},
                                           "output": {"json": '{"sum":5}'}}])

    def test_max_input_bytes_is_optional(self):
        """max_input_bytes appears in the JSON only when orb.toml sets it, round-trips, and refuses values over 1 MiB."""
        self.assertEqual(mf.from_toml(GOOD).input_cap_bytes, mf.MAX_INPUT_BYTES)
        m = mf.from_toml(toml("max_input_bytes = 4096\n"))
        self.assertEqual((m.to_json()["max_input_bytes"], m.input_cap_bytes), (4096, 4096))
        self.assertEqual(mf.from_json(json.loads(mf.canonical_bytes(m))), m)
        with self.assertRaises(mf.ManifestError) as e:
            mf.from_toml(toml(f"max_input_bytes = {mf.MAX_INPUT_BYTES + 1}\n"))
        self.assertIn("max_input_bytes", str(e.exception))

    def test_payment_is_optional_and_absent_at_its_defaults(self):
        """A [payment] table reaches the JSON only when it differs from the defaults, so old fids keep their bytes."""
        plain = mf.from_toml(GOOD)
        self.assertNotIn("payment", plain.to_json())
        self.assertEqual(mf.canonical_bytes(mf.from_toml(GOOD + '\n[payment]\nrequired = false\n')),
                         mf.canonical_bytes(plain))
        paid = mf.from_toml(GOOD + '\n[payment]\nrequired = true\n')
        self.assertEqual(paid.to_json()["payment"], {"required": True, "callers": "authorized"})
        self.assertEqual(mf.from_json(json.loads(mf.canonical_bytes(paid))), paid)
        anyone = mf.from_toml(GOOD + '\n[payment]\ncallers = "any"\n')
        self.assertEqual((anyone.payment_required, anyone.payment_callers), (False, "any"))

    def test_bad_payment_tables_name_the_field(self):
        """A non-boolean required, an unknown callers value or key, and a JSON payment at its defaults are refused."""
        for extra, field in (('required = "yes"', "payment.required"), ('callers = "everyone"', "payment.callers"),
                             ('require = true', "payment.require")):
            with self.assertRaises(mf.ManifestError) as e:
                mf.from_toml(GOOD + "\n[payment]\n" + extra + "\n")
            self.assertIn(field, str(e.exception))
        with self.assertRaises(mf.ManifestError) as e:
            mf.from_toml(toml('payment = "required"\n'))
        self.assertIn("[payment]", str(e.exception))
        doc = mf.from_toml(GOOD).to_json()
        with self.assertRaises(mf.ManifestError) as e:
            mf.from_json({**doc, "payment": {"required": False, "callers": "authorized"}})
        self.assertIn("omit it", str(e.exception))
        with self.assertRaises(mf.ManifestError) as e:
            mf.from_json({**doc, "payment": {"required": True}})
        self.assertIn("payment.callers", str(e.exception))

    def test_json_round_trip(self):
        """Reading back the canonical JSON gives the same manifest, bytecode tag included."""
        import attrs

        m = attrs.evolve(mf.from_toml(GOOD), bytecode="cpython-312")
        self.assertEqual(mf.from_json(json.loads(mf.canonical_bytes(m))), m)

    def test_comments_and_order_do_not_change_the_bytes(self):
        """Two orb.toml files with one meaning, written differently, give the same manifest bytes."""
        other = ('# a comment\nruntime="python"\nversion = "1.0.0"\nname = "adder"\nreplicas = 3\n'
                 '[[sample]]\noutput_json = {sum = 5}\ninput_json = {b = 3, a = 2}\n')
        self.assertEqual(mf.canonical_bytes(mf.from_toml(other)), mf.canonical_bytes(mf.from_toml(GOOD)))

    def test_json_receiver_is_strict(self):
        """A JSON manifest with a missing member, an unknown one, or another version is refused by name."""
        doc = mf.from_toml(GOOD).to_json()
        for broken, field in (({k: v for k, v in doc.items() if k != "replicas"}, "replicas"),
                              ({**doc, "extra": 1}, "extra"),
                              ({**doc, "manifest_version": 2}, "manifest_version")):
            err = self.assertRaises(mf.ManifestError, mf.from_json, broken)
            self.assertIn(field, [p.field for p in err.problems])

    def test_json_sample_with_non_canonical_base64_is_refused(self):
        """A JSON sample whose base64 is not in its one canonical spelling is refused."""
        doc = mf.from_toml(GOOD).to_json()
        doc["samples"] = [{"name": "", "input": {"base64": "/w"}, "output": {"text": ""}}]
        err = self.assertRaises(mf.ManifestError, mf.from_json, doc)
        self.assertEqual(err.problems[0].field, "samples[0].input.base64")


class SampleTests(SynchronousTestCase):
    def sample(self, lines):
        return mf.from_toml(toml(base=f'name="a"\nversion="1"\nruntime="python"\n[[sample]]\n{lines}\n')).samples[0]

    def test_text_input_and_output(self):
        """input and output are UTF-8 text, compared byte for byte."""
        s = self.sample('input = "héllo"\noutput = "HÉLLO\\n"')
        self.assertEqual(s.input, "héllo".encode())
        self.assertIsNone(s.check("HÉLLO\n".encode()))
        self.assertIn("expected", s.check(b"HELLO\n"))

    def test_base64_input_and_output(self):
        """input_base64 and output_base64 carry raw bytes, and the JSON manifest keeps them as base64."""
        s = self.sample('input_base64 = "/wA="\noutput_base64 = "AAE="')
        self.assertEqual(s.input, b"\xff\x00")
        self.assertIsNone(s.check(b"\x00\x01"))
        self.assertIsNotNone(s.check(b"\x00\x02"))
        self.assertEqual(s.to_json()["input"], {"base64": "/wA="})

    def test_json_output_compares_values(self):
        """output_json passes on any JSON text with an equal value, and true is not 1."""
        s = self.sample('input = ""\noutput_json = { ok = true, n = [1, 2] }')
        self.assertIsNone(s.check(b'{ "n": [1, 2.0], "ok": true }\n'))
        self.assertIsNotNone(s.check(b'{"n": [1, 2], "ok": 1}'))
        self.assertIn("non-JSON", s.check(b"nope"))

    def test_input_json_is_jcs(self):
        """input_json sends the canonical JSON of the value."""
        self.assertEqual(self.sample('input_json = { b = 1, a = "x" }\noutput = ""').input, b'{"a":"x","b":1}')


class ProblemTests(SynchronousTestCase):
    """Every bad field: the message names the field, shows the value and says the fix."""

    def problem(self, text, field):
        err = self.assertRaises(mf.ManifestError, mf.from_toml, text)
        found = [p for p in err.problems if p.field == field]
        self.assertTrue(found, f"no problem for {field!r} in {err}")
        line = next(line for line in str(err).splitlines() if f": {field} = " in line)
        return found[0], line

    def check(self, extra, field, value_text, fix_words, base=GOOD):
        problem, line = self.problem(toml(extra, base), field)
        self.assertIn(f"{field} = {value_text}", line)
        for word in fix_words:
            self.assertIn(word, problem.fix)

    def test_name(self):
        """A name that is not a DNS label is refused with the rule and an example."""
        self.check("", "name", '"Adder_1"', ["lowercase", "DNS label"], base=GOOD.replace('"adder"', '"Adder_1"'))

    def test_missing_name(self):
        """A missing name is reported as missing."""
        self.check("", "name", "(missing)", ["e.g."], base=GOOD.replace('name = "adder"\n', ""))

    def test_version(self):
        """A version with spaces is refused with an example."""
        self.check("", "version", '"1 0"', ['version = "1.0.0"'], base=GOOD.replace('"1.0.0"', '"1 0"'))

    def test_runtime(self):
        """An unknown runtime names the two that exist."""
        self.check("", "runtime", '"ruby"', ['"python"', '"exec"'], base=GOOD.replace('"python"', '"ruby"'))

    def test_entry(self):
        """An entry that climbs out of the directory, or a python entry that is not .py, is refused."""
        self.check('entry = "../x.py"', "entry", '"../x.py"', ["relative", "'..'"])
        self.check('entry = "main.sh"', "entry", '"main.sh"', [".py"])

    def test_description(self):
        """A description over 1024 bytes is refused with the limit."""
        self.check('description = "' + "x" * 1100 + '"', "description", '"xxx', ["1024"])

    def test_timeout(self):
        """timeout_ms of 0, too many, or as text is refused with the range."""
        self.check("timeout_ms = 0", "timeout_ms", "0", ["1 to 300000"])
        self.check("timeout_ms = 400000", "timeout_ms", "400000", ["1 to 300000"])
        self.check('timeout_ms = "5s"', "timeout_ms", '"5s"', ["whole number of milliseconds"])

    def test_memory(self):
        """memory_mb out of range or fractional is refused with the range."""
        self.check("memory_mb = 8", "memory_mb", "8", ["32 to 16384"])
        self.check("memory_mb = 64.5", "memory_mb", "64.5", ["whole number of MiB"])

    def test_isolation(self):
        """A misspelt isolation suggests the right one; per-function is refused for exec."""
        self.check('isolation = "per-fn"', "isolation", '"per-fn"', ['"per-call"', "did you mean 'per-function'"])
        self.check('isolation = "per-function"', "isolation", '"per-function"', ["exec runtime"],
                   base=GOOD.replace('"python"', '"exec"'))

    def test_replicas(self):
        """replicas of 0 or a boolean is refused with the range."""
        self.check("replicas = 0", "replicas", "0", ["1 to 32"])
        self.check("replicas = true", "replicas", "true", ["1 to 32"])

    def test_flags(self):
        """idempotent and pure must be booleans, and pure needs idempotent."""
        self.check('idempotent = "yes"', "idempotent", '"yes"', ["true or", "no quotes"])
        self.check("pure = 1", "pure", "1", ["pure = true"])
        self.check("pure = true", "idempotent", "false", ["pure function is idempotent"])

    def test_visibility(self):
        """visibility other than public or private is refused."""
        self.check('visibility = "secret"', "visibility", '"secret"', ['"public"', '"private"'])

    def test_unknown_field(self):
        """An unknown field is named, with the field it probably meant."""
        self.check("replica = 3", "replica", "3", ["no such field", "did you mean 'replicas'"])

    def test_bytecode_is_not_written_by_hand(self):
        """bytecode in orb.toml is refused: the --no-source build writes it."""
        self.check('bytecode = "cpython-312"', "bytecode", '"cpython-312"', ["--no-source"])

    def test_no_sample(self):
        """A manifest without a sample is refused, saying why samples are needed."""
        self.check("", "sample", "(missing)", ["[[sample]]", "orb deploy"], base=GOOD.split("[[sample]]")[0])

    def test_sample_fields(self):
        """A sample with two inputs, no output, non-text input or bad base64 names the sample field."""
        base = 'name="a"\nversion="1"\nruntime="python"\n[[sample]]\n'
        for body, field, value, fix in (
                ('input = "a"\ninput_json = 1\noutput = ""', "sample[0].input", "['input', 'input_json']",
                 "exactly one"),
                ('input = "a"', "sample[0].output", "(missing)", "exactly one"),
                ('input = 5\noutput = ""', "sample[0].input", "5", "input_json"),
                ('input_base64 = "***"\noutput = ""', "sample[0].input_base64", '"***"', "base64"),
                ('input = ""\noutput_base64 = "x"', "sample[0].output_base64", '"x"', "base64"),
                ('input = ""\noutput = ""\nexpect = 1', "sample[0].expect", "1", "remove it")):
            problem, line = self.problem(base + body + "\n", field)
            self.assertIn(f"{field} = {value}", line)
            self.assertIn(fix, problem.fix)

    def test_toml_syntax(self):
        """A TOML syntax error says where and points to the fix."""
        err = self.assertRaises(mf.ManifestError, mf.from_toml, 'name = "adder\n')
        self.assertIn("(syntax)", str(err))
        self.assertIn("line 1", str(err))

    def test_all_problems_at_once(self):
        """Every bad field is reported in one go, not only the first."""
        err = self.assertRaises(mf.ManifestError, mf.from_toml,
                                toml('timeout_ms = 0\nmemory_mb = 1\nreplicas = 99',
                                     base=GOOD.replace('"1.0.0"', '""')))
        self.assertEqual({p.field for p in err.problems}, {"version", "timeout_ms", "memory_mb", "replicas"})

    def test_oversized_sample(self):
        """A sample input over 16 KiB is refused with the limit."""
        big = "x" * (mf.MAX_SAMPLE_BYTES + 1)
        problem, _ = self.problem(f'name="a"\nversion="1"\nruntime="python"\n[[sample]]\ninput="{big}"\noutput=""\n',
                                  "sample[0].input")
        self.assertIn(str(mf.MAX_SAMPLE_BYTES), problem.fix)


class BytecodeTests(SynchronousTestCase):
    def test_runs_on_only_its_own_python(self):
        """A bytecode manifest runs only where the cache tag matches; a source manifest runs anywhere."""
        import attrs

        m = mf.from_toml(GOOD)
        self.assertTrue(m.runs_on("cpython-399"))
        compiled = attrs.evolve(m, bytecode="cpython-312")
        self.assertTrue(compiled.runs_on("cpython-312"))
        self.assertFalse(compiled.runs_on("cpython-313"))

    def test_bad_bytecode_tag_in_json(self):
        """A JSON manifest with a malformed bytecode tag is refused."""
        doc = {**mf.from_toml(GOOD).to_json(), "bytecode": "python 3"}
        err = self.assertRaises(mf.ManifestError, mf.from_json, doc)
        self.assertEqual([p.field for p in err.problems], ["bytecode"])


class TomlPitfallTests(SynchronousTestCase):
    def test_field_after_a_sample_is_explained(self):
        """A top-level field written after [[sample]] is reported with the TOML rule that moved it."""
        err = self.assertRaises(mf.ManifestError, mf.from_toml, GOOD + "replicas = 5\n")
        (problem,) = err.problems
        self.assertEqual(problem.field, "sample[0].replicas")
        self.assertIn("move it above the first [[sample]]", problem.fix)


class HostileManifestTests(SynchronousTestCase):
    """A tracker reads manifests from strangers: any input gives a Manifest or ManifestError, nothing else."""

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.data())
    def test_mutated_json_manifests(self, data):
        """A valid JSON manifest with members replaced, added or removed raises only ManifestError."""
        doc = mf.from_toml(GOOD).to_json()
        for _ in range(data.draw(st.integers(1, 4))):
            key = data.draw(st.sampled_from(sorted(doc) + ["samples", "bytecode", "other"]))
            if data.draw(st.booleans()):
                doc.pop(key, None)
            else:
                doc[key] = data.draw(JSON_VALUES)
        try:
            mf.from_json(doc)
        except mf.ManifestError:
            pass

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(JSON_VALUES)
    def test_arbitrary_json(self, value):
        """Any JSON value at all raises only ManifestError."""
        try:
            mf.from_json(value)
        except mf.ManifestError:
            pass

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.text(max_size=300))
    def test_arbitrary_toml_text(self, text):
        """Any text as orb.toml raises only ManifestError (or validates)."""
        try:
            mf.from_toml(GOOD.split("[[sample]]")[0] + text)
        except mf.ManifestError:
            pass

    def test_lone_surrogate_is_named(self):
        """A JSON manifest with a lone surrogate in a sample is refused naming where, and str() of it prints."""
        doc = mf.from_toml(GOOD).to_json()
        doc["samples"][0]["input"] = {"text": "\ud800"}
        err = self.assertRaises(mf.ManifestError, mf.from_json, doc)
        self.assertEqual(err.problems[0].field, "samples.0.input.text")
        str(err).encode("utf-8")
