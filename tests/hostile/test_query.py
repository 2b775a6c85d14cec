"""Query parameters: negative, non-numeric, enormous, unknown and malformed values on every
endpoint that reads them. Each is a clear 400 (or 404 for what does not exist)."""

import pytest

from tests.hostile.conftest import assert_error, assert_not_5xx, nothing_changes

pytestmark = pytest.mark.django_db

HUGE = "9" * 30  # far past any 64-bit integer
RUN = "__run__"

BAD_QUERIES = [
    # list of runs: paging, sorting and filters
    ("/api/v1/runs", "limit=-1"),
    ("/api/v1/runs", "limit=0"),
    ("/api/v1/runs", "limit=abc"),
    ("/api/v1/runs", "limit=1.5"),
    ("/api/v1/runs", "limit="),
    ("/api/v1/runs", "limit=50&limit=-1"),
    ("/api/v1/runs", "q=" + "a" * 33),
    ("/api/v1/runs", "offset=-1"),
    ("/api/v1/runs", "offset=abc"),
    ("/api/v1/runs", f"offset={HUGE}"),
    ("/api/v1/runs", "offset=1e9"),
    ("/api/v1/runs", "sort=unknown"),
    ("/api/v1/runs", "sort=-password"),
    ("/api/v1/runs", "sort=created_by__password"),
    ("/api/v1/runs", "sort=--created_at"),
    ("/api/v1/runs", "created_after=garbage"),
    ("/api/v1/runs", "created_after=2024-13-45"),
    ("/api/v1/runs", "created_before=99999-01-01T00:00:00"),
    ("/api/v1/runs", "created_after=1e999"),
    ("/api/v1/runs", "status=unknown"),
    ("/api/v1/runs", "status=failed,unknown"),
    ("/api/v1/runs", "status=FAILED"),
    ("/api/v1/runs", "trigger=carrier-pigeon"),
    ("/api/v1/runs", "workflow=%00"),
    ("/api/v1/runs", "q=%00"),
    ("/api/v1/runs", "created_by=a%00b"),
    ("/api/v1/workflows/typed/runs", "limit=-1"),
    ("/api/v1/workflows/typed/runs", "sort=nope"),
    ("/api/v1/workflows/typed/runs", f"offset={HUGE}"),
    ("/api/v1/workflows", "sort=definition"),
    ("/api/v1/workflows", "has_schedule=perhaps"),
    ("/api/v1/workflows", "limit=-5"),
    ("/api/v1/workflows", "q=%00"),
    ("/api/v1/workflows", "q=" + "a" * 100_000),
    ("/api/v1/approvals", "limit=abc"),
    ("/api/v1/approvals", "run_id=%00"),
    # calendar, search
    ("/api/v1/runs/calendar", "days=1000000000"),
    ("/api/v1/runs/calendar", f"days={HUGE}"),
    ("/api/v1/runs/calendar", "days=0"),
    ("/api/v1/runs/calendar", "days=-1"),
    ("/api/v1/runs/calendar", "days=abc"),
    ("/api/v1/runs/calendar", "days=1e3"),
    ("/api/v1/search", ""),
    ("/api/v1/search", "q=" + "x" * 5000),
    ("/api/v1/search", "q=a&limit=-1"),
    ("/api/v1/search", f"q=a&limit={HUGE}"),
    ("/api/v1/search", "q=a%00"),
    # waiting for a run
    ("/api/v1/runs", "wait=-1"),
    ("/api/v1/runs", "wait=abc"),
    # a run's steps, logs, events and outputs
    (f"/api/v1/runs/{RUN}/steps/transform/log", "tail=-5"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", f"tail={HUGE}"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "tail=abc"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "offset=-1"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "offset=abc"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "offset=5&tail=5"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "attempt=999"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "attempt=0"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "attempt=-1"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", f"attempt={HUGE}"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "limit=0"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", f"limit={HUGE}"),
    (f"/api/v1/runs/{RUN}/steps/transform/log", "stream=stdin"),
    (f"/api/v1/runs/{RUN}/logs", "level=debug"),
    (f"/api/v1/runs/{RUN}/logs", "attempt=abc"),
    (f"/api/v1/runs/{RUN}/logs", "attempt=0"),
    (f"/api/v1/runs/{RUN}/logs", f"attempt={HUGE}"),
    (f"/api/v1/runs/{RUN}/logs", "limit=-1"),
    (f"/api/v1/runs/{RUN}/logs", "step_id=a%00"),
    (f"/api/v1/runs/{RUN}/logs/export", "format=html"),
    (f"/api/v1/runs/{RUN}/logs/export", "level=trace"),
    (f"/api/v1/runs/{RUN}/logs/export", "step_id=%00"),
    (f"/api/v1/runs/{RUN}/events", "after=-1"),
    (f"/api/v1/runs/{RUN}/events", f"after={HUGE}"),
    (f"/api/v1/runs/{RUN}/events", "after=abc"),
    (f"/api/v1/runs/{RUN}/events", "limit=0"),
    (f"/api/v1/runs/{RUN}/events", f"limit={HUGE}"),
    (f"/api/v1/runs/{RUN}/outputs", "step_id=%00"),
    (f"/api/v1/runs/{RUN}/outputs", "step_id=" + "x" * 5000),
    (f"/api/v1/runs/{RUN}/steps/transform/preview", "key=" + "x" * 5000),
    (f"/api/v1/runs/{RUN}/steps/transform/profile", "key=%00"),
]


@pytest.mark.parametrize("path", sorted({path for path, _ in BAD_QUERIES}))
def test_bad_query_parameters_are_4xx(api, failed_run, path):
    for query in [query for where, query in BAD_QUERIES if where == path]:
        url = f"{path.replace(RUN, failed_run.pk)}?{query}"
        with nothing_changes():
            if "wait=" in query:
                response = api.post(url, {"workflow": "typed"}, format="json")
            else:
                response = api.get(url)
        body = assert_error(response, (400, 404))
        if response.status_code == 404:
            assert body["code"] in {"attempt_not_found", "no_records"}, (url, body)


@pytest.mark.parametrize(
    "query",
    [
        "limit=1000000",  # capped at the maximum
        "offset=1000000",  # past the end: an empty page
        "status=failed,failed,cancelled",
        "sort=-duration,status",
        "q=%F0%9F%98%80",
        "q=%ED%A0%80",  # UTF-8 of a lone surrogate: invalid, read as replacement chars
        "q=%FF%FE",
        "workflow=%27%20OR%201%3D1%20--",
        "workflow=typed&workflow=other",
        "created_after=2024-01-01T00:00:00%2B14:00",
        "unknown=parameter",
        "status[]=failed",
        "limit=-1&limit=50",  # the last one counts
    ],
)
def test_odd_but_harmless_queries_answer(api, failed_run, query):
    response = api.get(f"/api/v1/runs?{query}")
    assert_not_5xx(response)
    assert response.status_code == 200, response.content[:500]
    assert "results" in response.json()


def test_limit_is_capped_and_offset_past_the_end_is_empty(api, failed_run):
    page = api.get("/api/v1/runs?limit=1000000").json()
    assert page["count"] == 1 and len(page["results"]) == 1
    page = api.get("/api/v1/runs?offset=1000000").json()
    assert page["count"] == 1 and page["results"] == []


def test_a_long_query_string_is_refused_or_answered(api, failed_run):
    response = api.get("/api/v1/runs?" + "&".join(f"x{i}=y" for i in range(5000)))
    assert_not_5xx(response)
    response = api.get("/api/v1/runs?q=" + "a" * 100_000)
    assert_not_5xx(response)
