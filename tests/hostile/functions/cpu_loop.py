"""Spin forever."""


def handler(event, context):
    n = 0
    while True:
        n += 1
