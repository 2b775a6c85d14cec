"""Python steps that hand the engine hostile outputs and log text."""


def emit_non_finite(context):
    return {"big": float("inf"), "nothing": float("nan"), "fine": 1}


def emit_surrogate(context):
    print("lone \ud800 surrogate in the log")
    return {"text": "lone \udc00 surrogate"}


def emit_markup(context):
    print("<script>alert(1)</script>")
    return {"html": "<script>alert(1)</script>"}
