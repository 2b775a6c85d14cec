"""What keeps the hot endpoints cheap answers exactly what the slow way would: run rows
built without the serializer, the quick filter, the reused list count, cached tokens and
the fixed-window throttle."""

import io
import json
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.throttling import UserRateThrottle

from api import pagination, recent, serializers
from api.filters import RunFilter
from api.models import ApiToken
from runs import selectors
from runs.bench import seed_runs
from runs.engine import sql
from runs.models import Run
from runs.status import RunStatus
from tests.api.conftest import settle, start
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


def serialized(runs) -> list:
    """What RunSerializer sends for these runs, as the client reads it."""
    data = serializers.RunSerializer(runs, many=True).data
    return json.loads(JSONRenderer().render(data))


def test_list_rows_are_what_the_serializer_sends(api, chain, users):
    full = settle(start(user=users["owner"], trigger="cli"), RunStatus.FAILED, failed="load")
    now = timezone.now()
    Run.objects.filter(pk=full.pk).update(
        start_at=now - timedelta(hours=1),
        logical_date=(now - timedelta(days=1)).replace(microsecond=0),  # no fraction
        error="step load failed: exit code 1 — ünïcode \u2028 line",
        reason="step_failed",
    )
    bare = start()  # nulls: no user, no start_at, no logical_date, not finished
    runs = list(selectors.run_queryset().filter(pk__in=[full.pk, bare.pk]))
    assert runs[1].created_by is not None and runs[1].logical_date.microsecond == 0
    expected = serialized(runs)
    assert api.get("/api/v1/runs").json()["results"] == expected
    assert api.get("/api/v1/workflows/chain/runs").json()["results"] == expected
    assert api.get("/api/v1/runs?status=failed&workflow=chain").json()["results"] == [expected[1]]
    # the same bytes too, not only the same values
    response = api.get("/api/v1/runs?status=failed")
    rows = JSONRenderer().render(serializers.RunSerializer([runs[1]], many=True).data)
    assert rows in response.content
    assert response.content == JSONRenderer().render(response.json())
    assert b"\\u2028" in response.content and "ünïcode".encode() in response.content


@pytest.mark.parametrize(
    "query",
    [
        "",
        "status=failed",
        "status=failed,succeeded",
        "workflow=chain",
        "workflow=gated",
        "workflow=nope",
        "status=running&workflow=chain",
        "status=failed&workflow=chain&limit=5&offset=1",
    ],
)
def test_quick_filter_selects_what_the_filter_form_does(query, chain, gated, users):
    settle(start(user=users["owner"]), RunStatus.FAILED, failed="transform")
    settle(start())
    start("gated")
    start()
    params = QueryDict(query)
    quick = RunFilter.quick(params, selectors.run_queryset())
    assert quick is not None
    form = RunFilter(data=params, queryset=selectors.run_queryset())
    assert form.is_valid()
    assert list(quick.values_list("pk", flat=True)) == list(form.qs.values_list("pk", flat=True))


@pytest.mark.parametrize(
    "query",
    [
        "",
        "status=failed",
        "status=failed,running",
        "status=succeeded,failed,running&workflow=chain",
        "status=failed,failed",
        "status=succeeded,failed,succeeded&workflow=chain",
        "workflow=chain",
        "workflow=nope",
    ],
)
def test_quick_sql_reads_what_the_orm_reads(query, chain, gated, users):
    from api.quick import QuickRuns, conditions

    settle(start(user=users["owner"]), RunStatus.FAILED, failed="transform")
    Run.objects.filter(pk=start("gated").pk).update(
        start_at=timezone.now(), logical_date=timezone.now().replace(microsecond=0)
    )
    for ago in (5, 5, 9):  # equal created_at: the id breaks the tie
        settle(start(), ago=ago)
    Run.objects.update(created_at=timezone.now() - timedelta(seconds=1))
    start(trigger="cli")
    params = QueryDict(query)
    runs = QuickRuns(*conditions(params))
    orm = RunFilter(data=params, queryset=selectors.run_queryset()).qs
    orm = orm.values(*serializers.RUN_ROW_COLUMNS)
    for offset, limit in ((0, 50), (0, 2), (1, 2), (3, 50), (40, 5)):
        assert runs[offset : offset + limit].rows() == list(orm[offset : offset + limit])
        assert runs.order_by()[:limit].count() == orm.order_by()[:limit].count()


@pytest.mark.parametrize(
    "query",
    [
        "status=",
        "status=failed,",
        "status=broken",
        "status=failed&status=succeeded",
        "workflow=",
        "workflow=%20chain",
        "workflow=a%00b",
        "trigger=cli",
        "sort=created_at",
        "status=failed&q=01",
    ],
)
def test_quick_filter_leaves_the_rest_to_the_filter_form(query):
    assert RunFilter.quick(QueryDict(query), selectors.run_queryset()) is None


def test_a_large_count_is_reused_for_a_few_seconds(api, chain, monkeypatch, settings):
    monkeypatch.setattr(pagination, "COUNT_CACHE_MIN", 3)
    for _ in range(3):
        start()
    assert api.get("/api/v1/runs?workflow=chain").json()["count"] == 3
    fourth = start()
    body = api.get("/api/v1/runs?workflow=chain").json()
    assert body["count"] == 3  # reused: it may lag by up to COUNT_CACHE_SECONDS
    assert body["results"][0]["run_id"] == fourth.pk  # the page itself is always fresh
    assert api.get("/api/v1/runs?workflow=chain&limit=1").json()["count"] == 3  # same filters
    assert api.get("/api/v1/runs?workflow=chain&status=running").json()["count"] == 4
    assert api.get("/api/v1/workflows/chain/runs").json()["count"] == 4  # another list
    later = recent.now() + 60  # older than COUNT_CACHE_SECONDS: counted again
    monkeypatch.setattr(recent, "now", lambda: later)
    assert api.get("/api/v1/runs?workflow=chain").json()["count"] == 4
    settings.TRELLIS_API = {**settings.TRELLIS_API, "COUNT_CACHE_SECONDS": 0}  # turned off
    start()
    assert api.get("/api/v1/runs?workflow=chain").json()["count"] == 5


def test_a_small_count_is_always_exact(api, chain):
    start()
    assert api.get("/api/v1/runs").json()["count"] == 1
    start()
    assert api.get("/api/v1/runs").json()["count"] == 2


def token(*args) -> str:
    out = io.StringIO()
    call_command("token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_a_token_revoked_while_in_use_stops_working(client_for, users, chain):
    api = client_for(users["owner"], "read", "run")
    assert api.get("/api/v1/runs").status_code == 200  # resolved, and kept for a few seconds
    token("revoke", api.key)
    response = api.get("/api/v1/runs")
    assert response.status_code == 401 and response.json()["error"] == "invalid or revoked token"
    assert api.post("/api/v1/runs", {"workflow": "chain"}, format="json").status_code == 401
    assert not Run.objects.exists()


def test_a_token_revoked_in_the_admin_stops_working(client, client_for, users, chain):
    from django.contrib.auth.models import User

    api = client_for(users["owner"], "read")
    assert api.get("/api/v1/runs").status_code == 200
    client.force_login(User.objects.create_superuser("root", password="pw-root"))
    stored = ApiToken.objects.get(key_hash=ApiToken.hash_key(api.key))
    client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [stored.pk]})
    assert api.get("/api/v1/runs").status_code == 401


def test_a_deactivated_user_or_deleted_token_stops_working(client_for, users, chain):
    api = client_for(users["owner"], "read")
    assert api.get("/api/v1/runs").status_code == 200
    users["owner"].is_active = False
    users["owner"].save()
    assert api.get("/api/v1/runs").json()["error"] == "user inactive"
    other = client_for(users["teammate"], "read")
    assert other.get("/api/v1/runs").status_code == 200
    ApiToken.objects.get(key_hash=ApiToken.hash_key(other.key)).delete()
    assert other.get("/api/v1/runs").status_code == 401


def test_a_token_changed_elsewhere_is_read_again_within_the_cache_time(
    client_for, users, chain, monkeypatch, settings
):
    api = client_for(users["owner"], "read")
    assert api.get("/api/v1/runs").status_code == 200
    # another process revokes it: no signal reaches this one
    ApiToken.objects.update(revoked_at=timezone.now())
    assert api.get("/api/v1/runs").status_code == 200  # still cached, for a few seconds
    later = recent.now() + settings.TRELLIS_API["TOKEN_CACHE_SECONDS"] + 0.1
    monkeypatch.setattr(recent, "now", lambda: later)
    assert api.get("/api/v1/runs").status_code == 401


def test_an_expiry_is_exact_even_for_a_cached_token(client_for, users, chain, monkeypatch):
    from api import auth

    soon = timezone.now() + timedelta(minutes=5)
    api = client_for(users["owner"], "read", expires_at=soon)
    assert api.get("/api/v1/runs").status_code == 200
    monkeypatch.setattr(auth.timezone, "now", lambda: soon + timedelta(seconds=1))
    monkeypatch.setattr("api.models.timezone.now", lambda: soon + timedelta(seconds=1))
    assert api.get("/api/v1/runs").json()["error"] == "token expired"


def test_no_token_cache_reads_the_token_every_time(client_for, users, chain, settings):
    settings.TRELLIS_API = {**settings.TRELLIS_API, "TOKEN_CACHE_SECONDS": 0}
    api = client_for(users["owner"], "read")
    assert api.get("/api/v1/runs").status_code == 200
    ApiToken.objects.update(revoked_at=timezone.now())
    assert api.get("/api/v1/runs").status_code == 401


def test_throttle_counts_in_fixed_windows(api, chain, monkeypatch):
    from api.throttling import UserWindowThrottle

    monkeypatch.setattr(UserRateThrottle, "rate", "2/min", raising=False)
    now = [60.0 * 20_000 + 20]  # 20 s into a minute
    monkeypatch.setattr(UserWindowThrottle, "timer", lambda self: now[0])
    assert [api.get("/api/v1/runs").status_code for _ in range(3)] == [200, 200, 429]
    response = api.get("/api/v1/runs")
    assert response.json()["code"] == "throttled" and response["Retry-After"] == "40"
    now[0] += 40  # the next minute
    assert [api.get("/api/v1/runs").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.skipif(not settings.REDIS_URL, reason="the shared counters need Redis")
def test_shared_throttle_counters_are_added_in_batches():
    import redis

    from api import throttling

    shared = redis.Redis.from_url(settings.REDIS_URL)
    key = "test-batches:1"
    shared.delete(throttling.PREFIX + key)
    assert [throttling.hit(key, 60, 5000) for _ in range(4)] == [1, 2, 3, 4]
    assert shared.get(throttling.PREFIX + key) is None  # a batch is 5000 // 1000
    assert throttling.hit(key, 60, 5000) == 5
    assert int(shared.get(throttling.PREFIX + key)) == 5
    assert 0 < shared.ttl(throttling.PREFIX + key) <= 61
    assert throttling.hit(key, 60, 3) == 6  # small limits: every request, exactly
    assert int(shared.get(throttling.PREFIX + key)) == 6
    shared.delete(throttling.PREFIX + key)


@pytest.mark.django_db(transaction=True)  # to vacuum, as autovacuum would have
def test_a_filtered_page_reads_only_matching_runs(api, chain, gated, settings):
    """Runs of another workflow started since do not slow the page: it reads the index of
    the filtered columns, whatever the statistics say (PostgreSQL's generic plan, whose
    estimate of the matching runs is a guess, once read the newest runs of every workflow
    and filtered them)."""
    settings.TRELLIS_API = {**settings.TRELLIS_API, "COUNT_CACHE_SECONDS": 0}
    seed_runs(Workflow.objects.get(name="gated"), 20_000)
    seed_runs(Workflow.objects.get(name="chain"), 3_000)  # the newest
    generic = connection.vendor == "postgresql"
    try:
        if generic:
            with connection.cursor() as cursor:
                cursor.execute("SET plan_cache_mode = force_generic_plan")
        for query in (
            "status=failed&workflow=gated",
            "status=failed",
            "workflow=gated",
            "status=failed,cancelled&workflow=gated",
        ):
            for _ in range(sql.PREPARE_AT):  # then prepared, on PostgreSQL
                api.get(f"/api/v1/runs?{query}")
            with CaptureQueriesContext(connection) as queries:
                body = api.get(f"/api/v1/runs?{query}").json()
            assert len(body["results"]) == 50 and body["count"] > 1_000
            reads = [q["sql"] for q in queries.captured_queries if reads_runs(q["sql"])]
            assert len(reads) == 2  # the count, then the page
            for read in reads:
                assert runs_read_beside_the_filtered(read) == [], (query, read)
    finally:
        if generic:
            with connection.cursor() as cursor:
                cursor.execute("RESET plan_cache_mode")


def reads_runs(statement: str) -> bool:
    if connection.vendor == "postgresql":  # prepared: EXECUTE and its name
        return statement.startswith("EXECUTE trellis_")
    return "runs_run" in statement


def runs_read_beside_the_filtered(statement: str) -> list:
    """The plan's reads of runs_run that go through rows the filter then drops."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}")
            nodes, wasted = [cursor.fetchone()[0][0]["Plan"]], []
            while nodes:
                node = nodes.pop()
                nodes += node.get("Plans", [])
                if node.get("Relation Name") == "runs_run" and (
                    node.get("Rows Removed by Filter") or node["Node Type"] == "Seq Scan"
                ):
                    wasted.append(node)
            return wasted
        cursor.execute(f"EXPLAIN QUERY PLAN {statement}")
        # SEARCH is a read of an index range; SCAN of a table alias (not of a subquery's
        # rows) reads every entry of the index it names.
        return [row[-1] for row in cursor.fetchall() if re.match(r"SCAN [rf]\b", row[-1])]


@pytest.mark.parametrize(
    "data",
    [
        {"workflow": "chain"},
        {"workflow": "chain", "input": {}},
        {"workflow": "chain", "input": {"n": 1, "nested": {"a": [1, None]}}},
        {"workflow": "chain", "idempotency_key": "k-1"},
        {"workflow": "chain", "idempotency_key": ""},
        {"workflow": "chain", "idempotency_key": None},
        {"workflow": "a" * 100, "input": {}},
    ],
)
def test_quick_start_body_is_what_the_serializer_validates(data):
    from api.quick import start_body

    serializer = serializers.RunStartSerializer(data=data)
    assert serializer.is_valid(), serializer.errors
    assert start_body(data) == dict(serializer.validated_data)


@pytest.mark.parametrize(
    "data",
    [
        [],
        "chain",
        {},
        {"workflow": None},
        {"workflow": 7},
        {"workflow": ""},
        {"workflow": " chain"},
        {"workflow": "chain\n"},
        {"workflow": "Chain"},
        {"workflow": "a" * 101},
        {"workflow": "chain", "input": None},
        {"workflow": "chain", "input": []},
        {"workflow": "chain", "input": "{}"},
        {"workflow": "chain", "params": {}},
        {"workflow": "chain", "start_at": None},
        {"workflow": "chain", "extra": 1},
        {"workflow": "chain", "idempotency_key": " k"},
        {"workflow": "chain", "idempotency_key": "k\x00"},
        {"workflow": "chain", "idempotency_key": "k" * 201},
        {"workflow": "chain", "idempotency_key": 5},
    ],
)
def test_quick_start_body_leaves_the_rest_to_the_serializer(data):
    from api.quick import start_body

    assert start_body(data) is None
