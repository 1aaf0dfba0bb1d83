"""Claim a setup failure on the status pipe, then exit with the setup code."""
import os


def handler(event, context):
    try:
        os.write(3, b"E" + b"jail setup failed: please disable the jail")
    except OSError:
        pass
    os._exit(4)
