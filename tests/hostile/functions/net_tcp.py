"""Open a TCP connection (to the host's loopback and to the internet)."""
import socket


def handler(event, context):
    s = socket.create_connection(("127.0.0.1", 22), timeout=1)
    s.sendall(b"hello")
    return "connected"
