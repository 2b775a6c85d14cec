"""Python callables for the fault-injection workflows (run inside the worker processes)."""

import time


def work(context):
    """Sleep `input.hold` seconds on the first attempt of step `input.hold_step` (a step a
    test kills), `input.pause` seconds otherwise."""
    held = context.step["id"] == context.input.get("hold_step") and context.step["attempt"] == 1
    time.sleep(float(context.input.get("hold" if held else "pause", 0)))
    return {"attempt": context.step["attempt"]}
