"""Claim a memory verdict with the exit code the python runtime once used for it (3)."""
import os
import sys


def handler(event, context):
    if event == b"sys.exit":
        sys.exit(3)
    os.write(2, b"MemoryError: the function passed its memory limit\n")
    os._exit(3)
