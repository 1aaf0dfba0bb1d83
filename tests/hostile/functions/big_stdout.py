"""Answer with 100 MB."""


def handler(event, context):
    return b"x" * (100 * 1024 * 1024)
