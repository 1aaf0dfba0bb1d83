"""Never answer."""
import threading


def handler(event, context):
    threading.Event().wait()
