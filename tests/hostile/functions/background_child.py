"""Fork a child that outlives the call."""
import os
import time


def handler(event, context):
    pid = os.fork()
    if pid == 0:
        time.sleep(3600)
        os._exit(0)
    return "left a child behind"
