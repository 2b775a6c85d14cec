"""POST /runs/bulk at and past its limit: all or nothing, and a bad input is named by index."""

import json
import time

import pytest

from runs.services import MAX_BULK
from tests.hostile.conftest import assert_error, nothing_changes, post_json

pytestmark = pytest.mark.django_db


def bulk_body(count: int, bad: dict[int, str] | None = None) -> bytes:
    """{"workflow": "typed", "inputs": [{"n": 0}, …]} with raw JSON text at the `bad`
    indexes, built as bytes at once (no per-item json.dumps)."""
    items = [b'{"n":%d}' % i for i in range(count)]
    for index, raw in (bad or {}).items():
        items[index] = raw.encode()
    return b'{"workflow":"typed","inputs":[' + b",".join(items) + b"]}"


def test_one_input_past_the_limit_creates_nothing(api, typed):
    body = bulk_body(MAX_BULK + 1)
    with nothing_changes():
        started = time.monotonic()
        answer = assert_error(post_json(api, "/api/v1/runs/bulk", body), 400)
        elapsed = time.monotonic() - started
    assert str(MAX_BULK) in answer["error"].replace(",", ""), answer
    assert elapsed < 15, f"refusing took {elapsed:.1f} s"


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ('{"n":"not a number"}', "input"),  # fails the workflow's input schema
        ("[1, 2]", "dictionary"),  # not an object at all
        ('{"n":1,"x":"a\\u0000b"}', "NUL"),
        ('{"n":1,"x":"\\ud800"}', "surrogate"),
    ],
)
def test_one_bad_input_at_the_end_rejects_the_batch_by_index(api, typed, raw, fragment):
    index = MAX_BULK - 1
    body = bulk_body(MAX_BULK, bad={index: raw})
    with nothing_changes():
        started = time.monotonic()
        answer = assert_error(post_json(api, "/api/v1/runs/bulk", body), 400)
        elapsed = time.monotonic() - started
    text = json.dumps(answer)
    assert str(index) in text, answer
    assert fragment.lower() in text.lower(), answer
    assert elapsed < 20, f"refusing took {elapsed:.1f} s"


def test_bad_inputs_early_and_late_name_the_first(api, typed):
    body = bulk_body(1000, bad={3: '{"n":"x"}', 998: '{"n":"y"}'})
    with nothing_changes():
        answer = assert_error(post_json(api, "/api/v1/runs/bulk", body), 400)
    assert answer["details"]["index"] == 3, answer
