"""Python callables used by the test-suite's workflows."""

import os
import time


def upper(context):
    return {"loud": context.steps["make"]["outputs"]["word"].upper() + "!"}


def nap(context):
    time.sleep(float(context.input.get("seconds", 1)))
    return {}


def slow_once(context):
    """First attempt: mark that it started, then hang (the test kills this worker)."""
    if context.step["attempt"] == 1:
        with open(context.input["marker"], "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(60)
    return {"attempt": context.step["attempt"]}


def emit_nul(context):
    print("nul\x00in the log")
    return {"text": "a\x00b"}
