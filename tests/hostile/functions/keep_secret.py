"""A tenant holding a secret: in its input, its module state and its output."""
KEPT = []


def handler(event, context):
    KEPT.append(bytes(event))
    return b"echo " + bytes(event)
