"""List and read the peer's data dir."""
import json
import os


def handler(event, context):
    data_dir = json.loads(event)["data_dir"]
    return {"listing": os.listdir(data_dir), "db": open(os.path.join(data_dir, "orb.sqlite"), "rb").read().hex()}
