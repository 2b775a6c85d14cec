"""Python callables for the fault-injection workflows (run inside the worker processes)."""

import os
import time

# Set in a worker's environment to a file path: the first step attempt that worker starts
# creates the file (writing "<run id> <step id>") and holds, so a test knows one step that
# is surely running at its fault. It holds until the test calls release() (at most
# HOLD_SECONDS), or until the test kills its worker.
HOLD_ONE = "TRELLIS_FAULTS_HOLD_ONE"
HOLD_SECONDS = 60


def work(context):
    """Sleep `input.hold` seconds on the first attempt of step `input.hold_step` (a step a
    test kills), hold if this attempt is the one $TRELLIS_FAULTS_HOLD_ONE picks, sleep
    `input.pause` seconds otherwise."""
    first = context.step["attempt"] == 1
    if first and context.step["id"] == context.input.get("hold_step"):
        time.sleep(float(context.input.get("hold", 0)))
    elif first and _claim_hold(context):
        _hold(os.environ[HOLD_ONE])
    else:
        time.sleep(float(context.input.get("pause", 0)))
    return {"attempt": context.step["attempt"]}


def release(claim: str) -> None:
    """Let the held step finish."""
    with open(f"{claim}.release", "w"):
        pass


def _claim_hold(context) -> bool:
    path = os.environ.get(HOLD_ONE)
    if not path:
        return False
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # another attempt holds already
        return False
    with os.fdopen(fd, "w") as claim:
        claim.write(f"{context.run['id']} {context.step['id']}")
    return True


def _hold(claim: str) -> None:
    deadline = time.monotonic() + HOLD_SECONDS
    while not os.path.exists(f"{claim}.release") and time.monotonic() < deadline:
        time.sleep(0.05)
