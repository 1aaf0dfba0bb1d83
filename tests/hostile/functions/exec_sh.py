"""Replace the process with a shell."""
import os


def handler(event, context):
    os.execv("/bin/sh", ["/bin/sh", "-c", "id > /tmp/orb-hostile-sh"])
