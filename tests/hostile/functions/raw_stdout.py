"""Write 100 MB straight to fd 1."""
import os


def handler(event, context):
    chunk = b"y" * (1024 * 1024)
    for _ in range(100):
        os.write(1, chunk)
    return "done"
