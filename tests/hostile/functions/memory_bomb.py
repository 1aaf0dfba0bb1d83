"""Allocate until the host runs out."""


def handler(event, context):
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))
