"""Talk to a local daemon over a unix socket, or make a socketpair."""
import socket


def handler(event, context):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("/run/dbus/system_bus_socket")
    return "connected"
