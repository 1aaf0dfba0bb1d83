"""Leave a non-daemon thread running after answering."""
import threading
import time


def handler(event, context):
    threading.Thread(target=time.sleep, args=(3600,)).start()
    return "answered, thread still running"
