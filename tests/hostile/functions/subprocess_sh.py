"""Run a shell command the usual way."""
import subprocess


def handler(event, context):
    return subprocess.run(["/bin/sh", "-c", "id"], capture_output=True).stdout
