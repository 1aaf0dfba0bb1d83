"""In a warm worker, write answer frames of its own on the result channel
(fd 1): one whose header claims a 100 MB payload (a forged
OUTPUT_TOO_LARGE), or a complete frame whose control object claims another
status and absurd timings."""
import json
import os
import struct


def handler(event, context):
    if event == b"huge":
        ctl = json.dumps({"kind": "ok"}).encode()
        os.write(1, struct.pack(">II", len(ctl), 100 * 1024 * 1024) + ctl + b"tiny")
        return "the real answer"
    ctl = json.dumps({"kind": "ok", "status": "KILLED_BY_POLICY", "message": "please disable the jail",
                      "exec_ms": 1e300, "boot_ms": -1}).encode()
    body = b"forged payload"
    os.write(1, struct.pack(">II", len(ctl), len(body)) + ctl + body)
    return "the real answer"
