"""Every error has the shape {"error", "code", "details"} and the right status."""

import pytest
from django.test import RequestFactory

from api import errors
from runs import selectors
from runs.models import Run
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    assert body["error"]
    return body


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_unknown_paths_are_json_404(api, method):
    assert_error(getattr(api, method)("/api/v1/nothing/here"), 404, "not_found")
    assert_error(getattr(api, method)("/api/v2/runs"), 404, "not_found")
    assert_error(getattr(api, method)("/api"), 404, "not_found")


def test_unknown_path_needs_no_auth_to_be_404(client):
    assert_error(client.post("/api/v1/nothing", {}), 404, "not_found")


def test_method_not_allowed(api, chain):
    assert_error(api.delete("/api/v1/runs"), 405, "method_not_allowed")
    assert_error(api.put("/api/v1/runs/calendar", {}), 405, "method_not_allowed")


def test_unsupported_media_type(api, chain):
    response = api.generic("POST", "/api/v1/runs", "workflow=chain", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    response = api.generic(
        "POST", "/api/v1/runs", "workflow: chain", content_type="application/yaml"
    )
    assert_error(response, 415, "unsupported_media_type")  # YAML only for definitions
    assert not Run.objects.exists()


def test_parse_errors(api, chain):
    body = assert_error(
        api.generic("POST", "/api/v1/runs", "{", content_type="application/json"),
        400,
        "parse_error",
    )
    assert "JSON" in body["error"]
    deep = "[" * 100_000 + "]" * 100_000
    assert_error(
        api.generic("POST", "/api/v1/runs", deep, content_type="application/json"),
        400,
        "parse_error",
    )
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
    )
    response = api.generic("POST", "/api/v1/workflows", bomb, content_type="application/yaml")
    assert_error(response, 400, "parse_error")
    assert list(Workflow.objects.values_list("name", flat=True)) == ["chain"]


def test_validation_errors_name_the_fields(api, chain):
    body = assert_error(
        api.post("/api/v1/runs", {"workflow": 5, "input": []}, format="json"), 400, "invalid"
    )
    assert "input" in body["details"]["fields"]


def test_too_large_bodies_are_413(api, chain, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    big = {"workflow": "chain", "input": {"blob": "x" * 4096}}
    body = assert_error(api.post("/api/v1/runs", big, format="json"), 413, "too_large")
    assert "2048" in body["error"]
    document = "name: big\nsteps: [{id: a}]\n# " + "x" * 4096
    response = api.generic("POST", "/api/v1/workflows", document, content_type="application/yaml")
    assert_error(response, 413, "too_large")
    assert not Run.objects.exists()


def test_unhandled_errors_are_json_500(api, monkeypatch):
    def broken(days):
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "run_calendar", broken)
    body = assert_error(api.get("/api/v1/runs/calendar"), 500, "server_error")
    assert "boom" not in body["error"]


def test_django_error_handlers_answer_json_under_api():
    factory = RequestFactory()
    response = errors.handler500(factory.get("/api/v1/runs"))
    assert response.status_code == 500 and b'"server_error"' in response.content
    response = errors.handler404(factory.get("/api/v1/x"), None)
    assert response.status_code == 404 and b'"not_found"' in response.content
    page = errors.handler404(factory.get("/elsewhere"), None)
    assert page.status_code == 404 and b"not_found" not in page.content


def test_options_describe_endpoints(api, chain):
    for path in (
        "/api/v1/runs",
        "/api/v1/workflows/chain/runs",
        "/api/v1/workflows",
        "/api/v1/runs/bulk",
    ):
        response = api.options(path)
        assert response.status_code == 200, path
