"""Packages and stores for the package tests: real canonical packages, inline stores in a temp dir."""

import os
import random

from twisted.internet.task import Clock

from orb.net import packages as pk
from orb.protocol import manifest as mf
from orb.protocol.package import PackageFile, pack

TOML = """\
name = "adder"
version = "1.0.0"
runtime = "{runtime}"
entry = "{entry}"
memory_mb = {memory_mb}

[[sample]]
name = "two plus three"
input_json = {{ a = 2, b = 3 }}
output_json = 5
"""


def function(runtime="python", memory_mb=256, payload_bytes=0, seed=0, bytecode=None, visibility="public"):
    """(package bytes, manifest bytes) of a small valid function; ``payload_bytes`` of random data pad it."""
    entry = "main.py" if runtime == "python" else "main"
    manifest = mf.from_toml(TOML.format(runtime=runtime, entry=entry, memory_mb=memory_mb))
    if visibility != "public":
        import attrs

        manifest = attrs.evolve(manifest, visibility=visibility)
    if bytecode is not None:
        import attrs

        manifest = attrs.evolve(manifest, bytecode=bytecode)
    files = [PackageFile(entry, b"def handler(event, context):\n    return event\n", executable=runtime == "exec")]
    if payload_bytes:
        files.append(PackageFile("data.bin", random.Random(seed).randbytes(payload_bytes)))
    data = pack(files, manifest.to_json())
    return data, mf.canonical_bytes(manifest)


def open_store(case, data_dir=None, **kwargs):
    """An inline PackageStore (no threads) in ``data_dir`` (a fresh temp dir by default)."""
    if data_dir is None:
        data_dir = case.mktemp()
        os.makedirs(data_dir)
    kwargs.setdefault("clock", Clock())
    store = case.successResultOf(pk.PackageStore.open(None, data_dir, inline=True, **kwargs))
    case.addCleanup(store.db.close)
    return store, data_dir
