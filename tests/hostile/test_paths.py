"""Path-like names for workflows, steps and runs, in URLs and in bodies: a 404 or a 400,
never a file read, never a different object than the one named."""

import pytest

from tests.hostile.conftest import assert_error, naming, nothing_changes, post_json, send

pytestmark = pytest.mark.django_db

PATH_NAMES = [
    "..",
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "....//....//etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "file:///etc/passwd",
    "typed/../typed",
    "typed%2F..%2Ftyped",
    "typed/",
    ".",
    "~root",
    "*",
    "typed%",
    "typed%3Fx=1",
    "typed;rm",
]
SECRETS = (b"root:", b"[fonts]", b"daemon:", b"SECRET_KEY")


def leaked(response) -> bool:
    return any(secret in response.content for secret in SECRETS)


@pytest.mark.parametrize("name", PATH_NAMES)
def test_path_like_names_in_urls_are_404(api, failed_run, name):
    for method, url in naming(failed_run, name):
        with nothing_changes():
            response = getattr(api, method)(url, format="json")
            # a name that normalises to an existing endpoint may answer it; never with a file
            if response.status_code < 400:
                assert "typed" in name, url
            else:
                assert_error(response, (400, 404, 405))
        assert not leaked(response), url
    with nothing_changes():
        response = send(api, "PUT", f"/api/v1/workflows/{name}", {"name": name, "steps": [{"id": "a"}]})  # fmt: skip
        assert_error(response, (400, 404, 405))
        response = send(api, "PATCH", f"/api/v1/workflows/{name}", {"description": "x"})
        assert_error(response, (400, 404, 405))


@pytest.mark.parametrize("name", PATH_NAMES)
def test_path_like_names_in_bodies_are_refused(api, failed_run, name):
    with nothing_changes():
        assert_error(post_json(api, "/api/v1/workflows", {"name": name, "steps": [{"id": "a"}]}), 400)  # fmt: skip
        assert_error(post_json(api, "/api/v1/workflows", {"name": "ok", "steps": [{"id": name}]}), 400)  # fmt: skip
        response = post_json(api, "/api/v1/runs", {"workflow": name})
        assert_error(response, (400, 404))
        assert not leaked(response)
        response = post_json(api, "/api/v1/runs/bulk", {"workflow": name, "inputs": [{}]})
        assert_error(response, (400, 404))
        response = post_json(api, f"/api/v1/runs/{failed_run.pk}/rerun", {"from_step": name})
        assert_error(response, (400, 404))
        response = api.get(f"/api/v1/runs/{failed_run.pk}/logs", {"step_id": name})
        assert response.status_code in (200, 400) and not leaked(response)
        if response.status_code == 200:
            assert response.json() == []
        response = api.get(f"/api/v1/runs/{failed_run.pk}/outputs", {"step_id": name})
        assert response.status_code in (200, 400) and not leaked(response)
        response = api.get(f"/api/v1/runs/{failed_run.pk}/steps/extract/preview", {"key": name})
        assert_error(response, (400, 404))


def test_a_run_id_prefix_or_pattern_never_names_a_run(api, failed_run):
    run = failed_run
    for almost in (run.pk[:-1], run.pk + "0", run.pk.upper(), f"{run.pk[:8]}%", f"{run.pk[:8]}*"):
        response = api.get(f"/api/v1/runs/{almost}")
        assert_error(response, 404, "run_not_found")


def test_path_like_workdir_and_callable_are_refused(api):
    steps = [
        {"id": "a", "kind": "python", "callable": "../../etc/passwd"},
        {"id": "a", "kind": "python", "callable": "/etc/passwd"},
        {"id": "a", "kind": "python", "callable": "os.path/../system"},
    ]
    for step in steps:
        with nothing_changes():
            response = post_json(api, "/api/v1/workflows", {"name": "paths", "steps": [step]})
            assert_error(response, 400)
