def handler(event, context):
    return "still serving"
