"""An ordinary tenant: run ten threads and join them."""
import threading


def handler(event, context):
    done = []
    threads = [threading.Thread(target=done.append, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"threads": len(done)}
