"""Hostile requests to a real `trellis serve` (uWSGI in front of Django, as in production),
for what the in-process test client cannot show: the web server's own reading of lengths,
header blocks, truncated and chunked bodies and raw bytes in the request line. Every answer
is a 4xx in the error shape (or, for a header block over 64 KiB, a closed connection), the
server goes on serving, and nothing is stored. One server for the whole module."""

import json
import socket

import pytest
import requests
from django.test import Client
from django.utils import timezone

from api.models import ApiToken
from runs.engine.dispatch import broker
from runs.models import Run
from tests.faults.conftest import Cluster, WebServer
from tests.hostile.conftest import ERROR_KEYS, nothing_changes

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 4096  # this server's TRELLIS_MAX_BODY_BYTES: small, so oversized bodies stay light
START = {"workflow": "typed", "input": {"n": 1}}
SECRETS = (b"root:", b"daemon:", b"SECRET_KEY")


@pytest.fixture(scope="module")
def server(django_db_setup):
    env = {
        **Cluster().env,  # the test database and queue, as the `web` fixture uses
        "TRELLIS_MAX_BODY_BYTES": str(LIMIT),
        "TRELLIS_WEB_WORKERS": "1",  # one worker: "still serving" means that same worker
        "TRELLIS_TOKEN_CACHE_SECONDS": "0",  # a token revoked by the test is dead at once
        "TRELLIS_THROTTLE_ANON": "100000/min",  # the refusals here must be 401s, not 429s
    }
    web = WebServer(env, token="").start()
    yield web
    web.kill_hard()


@pytest.fixture
def live(server, users, typed):
    """The server, holding a token of every scope for the owner; `typed` exists."""
    _, server.token = ApiToken.issue(user=users["owner"], scopes=["read", "run", "admin"])
    yield server
    broker().purge_queue()  # tasks of the runs the control requests started


# --- helpers -------------------------------------------------------------------------------


def check_error(status: int, content_type: str, body: bytes, expected, code=None) -> dict:
    """A clear refusal: the status, JSON, exactly the SPEC's error keys."""
    statuses = expected if isinstance(expected, tuple) else (expected,)
    assert status in statuses, (status, body[:2000])
    assert content_type.startswith("application/json"), (content_type, body[:500])
    answer = json.loads(body)
    assert set(answer) == ERROR_KEYS, answer
    assert isinstance(answer["error"], str) and answer["error"]
    assert isinstance(answer["details"], dict)
    if code is not None:
        assert answer["code"] == code, answer
    return answer


def assert_error(response: requests.Response, status, code=None) -> dict:
    content_type = response.headers.get("Content-Type", "")
    return check_error(response.status_code, content_type, response.content, status, code)


def call(server, method: str, path: str, token: str | None = None, **kwargs):
    """A request with the test's token (or `token`; "" for none)."""
    key = server.token if token is None else token
    headers = {"Authorization": f"Token {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))
    return requests.request(method, server.url(path), headers=headers, timeout=30, **kwargs)


def raw_request(method: str, path: bytes, headers: list[tuple[bytes, bytes]], body=b"") -> bytes:
    """An HTTP/1.1 request exactly as given: no header added but Host."""
    head = method.encode() + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


class Reply:
    """What came back on a raw connection: nothing (closed or reset), or an answer."""

    def __init__(self, data: bytes):
        self.data = data
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1]) if data else None
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")

    def error(self, status, code=None) -> dict:
        return check_error(
            self.status, self.headers.get("content-type", ""), self.body, status, code
        )


def exchange(server, data: bytes, *, then: str = "read") -> Reply:
    """Send raw bytes on a new connection, then read the answer ("read"), or close the
    sending side first ("half-close": the server sees the body end early), or close the
    socket at once ("close": nothing to read)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        if then == "close":
            sock.sendall(data)
            return Reply(b"")
        return _send_and_read(sock, data, half_close=then == "half-close")


def keep_alive(server, *requests_: bytes) -> list[Reply]:
    """Requests one after the other on one connection, each answer read before the next."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        return [_send_and_read(sock, request) for request in requests_]


def _send_and_read(sock, data: bytes, half_close: bool = False) -> Reply:
    """Up to the answer's Content-Length (the connection may stay open after it)."""
    answer = b""
    try:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server dropped the connection: as good as closed
    return Reply(answer)


def _complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True  # no length given: the head is what the tests look at


def json_headers(server, length: int | None = None, token: str | None = None) -> list:
    key = server.token if token is None else token
    headers = [(b"Authorization", b"Token " + key.encode()), (b"Content-Type", b"application/json")]
    if length is not None:
        headers.append((b"Content-Length", str(length).encode()))
    return headers


def assert_serving(server) -> None:
    """The server answers the next requests normally."""
    assert requests.get(server.url("/api/v1/health"), timeout=30).status_code == 200
    response = call(server, "GET", "/api/v1/runs")
    assert response.status_code == 200, response.content[:500]


def padded(payload: dict, size: int) -> bytes:
    """`payload` as JSON, followed by spaces up to `size` bytes: still valid JSON."""
    text = json.dumps(payload).encode()
    return text + b" " * (size - len(text))


# --- size ----------------------------------------------------------------------------------


def test_a_body_over_the_configured_limit_is_413(live):
    big = {"workflow": "typed", "input": {"n": 1, "blob": "x" * LIMIT}}
    with nothing_changes():
        assert_error(call(live, "POST", "/api/v1/runs", json=big), 413, "too_large")
        bulk = {"workflow": "typed", "inputs": [{"n": i} for i in range(LIMIT // 8)]}
        assert_error(call(live, "POST", "/api/v1/runs/bulk", json=bulk), 413, "too_large")
        definition = f"name: big\nsteps: [{{id: a}}]\n#{'x' * LIMIT}\n"
        response = call(
            live, "POST", "/api/v1/workflows", data=definition,
            headers={"Content-Type": "application/yaml"},
        )  # fmt: skip
        assert_error(response, 413, "too_large")
        # The limit is this server's setting: a body just under it is read.
        response = call(
            live, "POST", "/api/v1/workflows/typed/dry-run",
            data=padded({"input": {"n": 1}}, LIMIT - 1),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert response.status_code == 200, response.content[:500]
    assert_serving(live)


def test_a_declared_length_over_the_limit_is_413_even_for_a_small_document(live):
    """A valid start padded past the limit: refused for its length, not started."""
    with nothing_changes():
        body = padded(START, LIMIT + 1)
        reply = exchange(
            live, raw_request("POST", b"/api/v1/runs", json_headers(live, len(body)), body)
        )
        reply.error(413, "too_large")
        body = padded(START, LIMIT * 4)
        reply = exchange(
            live, raw_request("POST", b"/api/v1/runs", json_headers(live, len(body)), body)
        )
        reply.error(413, "too_large")
    assert_serving(live)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_arrives(live):
    with nothing_changes():
        request = raw_request("POST", b"/api/v1/runs", json_headers(live, 1 << 30), b'{"work')
        exchange(live, request, then="half-close").error(413, "too_large")
    assert_serving(live)


# --- malformed, mistyped, unauthorised -------------------------------------------------------

MALFORMED = [
    b'{"workflow": "typed", "input": {"n": 1',
    b"{'workflow': 'typed'}",
    b'{"workflow": "typed", "input": {"n": NaN}}',
    b'{"workflow": "typed\xff\xfe"}',
    b'{"workflow": "typed\x00"}',
    b"[" * 2000 + b"]" * 2000,  # nested past the limit, within the body size
    b'{"workflow": "typed", "input": {"n": 1, "x": 1e999}}',
]


def test_malformed_json_is_400(live):
    with nothing_changes():
        for body in MALFORMED:
            response = call(
                live, "POST", "/api/v1/runs", data=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert_error(response, 400, "parse_error")
    assert_serving(live)


def test_wrong_content_types_are_415(live):
    body = json.dumps(START).encode()
    with nothing_changes():
        for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded"):
            response = call(
                live, "POST", "/api/v1/runs", data=body, headers={"Content-Type": content_type}
            )
            assert_error(response, 415, "unsupported_media_type")
        response = call(live, "POST", "/api/v1/runs", files={"workflow": ("x.json", body)})
        assert_error(response, 415, "unsupported_media_type")  # multipart
        headers = [json_headers(live)[0], (b"Content-Length", str(len(body)).encode())]
        request = raw_request("POST", b"/api/v1/runs", headers, body)
        exchange(live, request).error(415, "unsupported_media_type")  # no Content-Type
    assert_serving(live)


def test_bogus_revoked_and_under_scoped_tokens(live, users):
    read_token, read_key = ApiToken.issue(user=users["teammate"], scopes=["read"])
    _, run_key = ApiToken.issue(user=users["teammate"], scopes=["read", "run"])
    revoked, revoked_key = ApiToken.issue(user=users["owner"], scopes=["read", "run", "admin"])
    revoked.revoked_at = timezone.now()
    revoked.save()
    _, expired_key = ApiToken.issue(user=users["owner"], scopes=["run"], expires_at=timezone.now())
    definition = {"name": "fresh", "steps": [{"id": "a"}]}
    with nothing_changes():
        for key in ("", "trl_" + "a" * 43, revoked_key, expired_key, read_key[:-1]):
            assert_error(call(live, "POST", "/api/v1/runs", token=key, json=START), 401)
            assert_error(call(live, "GET", "/api/v1/runs", token=key), 401)
        for header in (b"Token \xff\xfe\xe9", b"Basic dXNlcjpwYXNz", b"Token " + b"x" * 8000):
            headers = [(b"Authorization", header), (b"Content-Type", b"application/json")]
            body = json.dumps(START).encode()
            headers.append((b"Content-Length", str(len(body)).encode()))
            exchange(live, raw_request("POST", b"/api/v1/runs", headers, body)).error(401)
        # Known tokens without the scope.
        response = call(live, "POST", "/api/v1/runs", token=read_key, json=START)
        assert_error(response, 403, "permission_denied")
        response = call(live, "POST", "/api/v1/workflows", token=run_key, json=definition)
        assert_error(response, 403, "permission_denied")
        response = call(live, "POST", "/api/v1/system/purge", token=run_key, json={"days": 0})
        assert_error(response, 403, "permission_denied")
    assert call(live, "GET", "/api/v1/runs", token=read_key).status_code == 200
    assert ApiToken.objects.get(pk=read_token.pk).scopes == "read"


def test_a_cross_site_post_with_a_session_cookie_is_403(live, users):
    """A staff browser signed in to the admin, tricked into posting: no CSRF token, or a
    foreign Origin, is 403, while the same session reads fine."""
    users["owner"].is_staff = True
    users["owner"].save()
    browser = Client()
    browser.force_login(users["owner"])  # a session row the server reads like any other
    cookies = {"sessionid": browser.cookies["sessionid"].value}
    # A new connection per request: see test_a_refusal_keeps_the_connection_usable.
    admin = requests.get(live.url("/admin/"), cookies=cookies, timeout=30)
    assert admin.status_code == 200 and admin.url.endswith("/admin/"), admin.url  # signed in
    csrf = admin.cookies.get("csrftoken")
    assert csrf, "the admin page set no CSRF cookie"
    cookies["csrftoken"] = csrf
    assert requests.get(live.url("/api/v1/runs"), cookies=cookies, timeout=30).status_code == 200

    def post(headers=None, **kwargs):
        url = live.url("/api/v1/runs")
        return requests.post(url, cookies=cookies, headers=headers, timeout=30, **kwargs)

    with nothing_changes():
        assert "CSRF" in assert_error(post(json=START), 403)["error"]
        for origin in ("https://evil.example", "null"):
            assert_error(post({"X-CSRFToken": csrf, "Origin": origin}, json=START), 403)
        response = post(
            {"Content-Type": "application/x-www-form-urlencoded"}, data="workflow=typed"
        )
        assert_error(response, (403, 415))  # 415: the CSRF check reads the form first


# --- the URL ---------------------------------------------------------------------------------

URL_NAMES = [
    b"ab%00cd",
    b"ab\x00cd",  # a raw NUL byte in the request line
    b"%00",
    b"..%2f..%2f..%2fetc%2fpasswd",
    b"%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"%252e%252e%252fetc%252fpasswd",
    b"....%2f%2f....%2f%2fetc%2fpasswd",
    b"typed%2f..%2f..%2f..%2fetc%2fpasswd",
    b"%c0%ae%c0%ae%2fetc%2fpasswd",  # overlong UTF-8 dots
    b"typed%ff",
]


def test_nul_bytes_and_path_like_names_in_the_url(live, failed_run):
    run = failed_run.pk.encode()
    body = json.dumps(START).encode()
    with nothing_changes():
        for name in URL_NAMES:
            for method, path in (
                ("GET", b"/api/v1/runs/" + name),
                ("GET", b"/api/v1/runs/" + run + b"/steps/" + name + b"/log"),
                ("GET", b"/api/v1/workflows/" + name),
                ("POST", b"/api/v1/workflows/" + name + b"/runs"),
                ("POST", b"/api/v1/runs/" + name + b"/cancel"),
            ):
                reply = exchange(
                    live, raw_request(method, path, json_headers(live, len(body)), body)
                )
                reply.error((400, 404, 405))
                assert not any(secret in reply.data for secret in SECRETS), path
        # Dot segments the server resolves: under /api they reach an endpoint or a JSON 404,
        # beyond it a plain 404; never a file.
        reply = exchange(
            live,
            raw_request("GET", b"/api/v1/workflows/../runs/../../v1/runs/%00", json_headers(live)),
        )
        reply.error(404)
        for path in (
            b"/api/v1/../../etc/passwd",
            b"/api/v1/workflows/typed/../../../../../etc/passwd",
        ):
            reply = exchange(live, raw_request("GET", path, json_headers(live)))
            assert reply.status == 404, reply.data[:300]
            assert not any(secret in reply.data for secret in SECRETS), path
    assert_serving(live)


# --- the web server's framing ----------------------------------------------------------------


OVERSIZED_HEADERS = [
    [(b"X-Big", b"a" * 70_000)],  # one header
    [(b"X-H%d" % i, b"a" * 100) for i in range(700)],  # many
    [(b"Cookie", b"c=" + b"a" * 70_000)],
]


def test_a_header_block_over_64_kib_closes_the_connection(live):
    body = json.dumps(START).encode()
    with nothing_changes():
        for headers in OVERSIZED_HEADERS:
            request = raw_request(
                "POST", b"/api/v1/runs", json_headers(live, len(body)) + headers, body
            )
            reply = exchange(live, request)
            # uWSGI drops the connection; an answer, if any, is 431 (or 400), never a 5xx
            assert reply.status in (None, 400, 431), reply.data[:500]
            assert_serving(live)


def test_a_truncated_body_stores_nothing(live):
    """A complete, valid start sent with a Content-Length larger than it (by a little, or
    past the limit), then the socket closed (or only its sending side): the partial body
    is never acted upon."""
    body = json.dumps(START).encode()
    with nothing_changes():
        for declared in (len(body) + 50, len(body) * 2, LIMIT * 4, 1 << 30):
            for then in ("close", "half-close"):
                request = raw_request("POST", b"/api/v1/runs", json_headers(live, declared), body)
                reply = exchange(live, request, then=then)
                if reply.status is not None:  # uWSGI closes without an answer; else a 4xx
                    reply.error((400, 413))
                assert_serving(live)
    # Control: the same body with its own length starts the run.
    reply = exchange(
        live, raw_request("POST", b"/api/v1/runs", json_headers(live, len(body)), body)
    )
    assert reply.status == 201, reply.data[:500]
    assert Run.objects.get().input == {"n": 1}


# A body the server cannot frame must be refused, never acted upon as if it were empty: on
# /workflows/free/runs (no input schema) an empty body is a valid start.
FREE_RUNS = b"/api/v1/workflows/free/runs"
INVALID = b'{"input": [1]}'  # 400 when read


def send_with_length(server, length: bytes) -> Reply:
    headers = json_headers(server) + [(b"Content-Length", length)]
    return exchange(server, raw_request("POST", FREE_RUNS, headers, INVALID), then="half-close")


def test_garbage_content_lengths_are_refused(live, free):
    with nothing_changes():
        for length in (b"-5", b"+14", b" 14", b"99999999999999999999999"):
            reply = send_with_length(live, length)
            if reply.status is not None:  # uWSGI may close without an answer
                reply.error((400, 411, 413))
            assert_serving(live)


def test_content_lengths_that_are_not_numbers_are_refused(live, free):
    with nothing_changes():
        for length in (b"abc", b"0x0e"):
            reply = send_with_length(live, length)
            if reply.status is not None:
                reply.error((400, 411))


def chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def test_a_chunked_body_is_read_or_refused(live, free):
    """Transfer-Encoding: chunked, what streaming clients send (uWSGI's http11-socket does
    not de-chunk): the body is read, or the request refused; never acted upon without it."""
    headers = json_headers(live) + [(b"Transfer-Encoding", b"chunked")]
    with nothing_changes():
        for body in (INVALID, b'{"input": {"n": ', b"<xml/>"):
            reply = exchange(live, raw_request("POST", FREE_RUNS, headers, chunked(body)))
            reply.error((400, 411, 415))
    reply = exchange(live, raw_request("POST", FREE_RUNS, headers, chunked(b'{"input": {"x": 7}}')))
    if reply.status == 201:
        assert Run.objects.get().input == {"x": 7}, "the run did not get the input sent"
    else:
        reply.error((400, 411))


def test_both_content_length_and_chunked_is_refused(live):
    body = json.dumps(START).encode()
    headers = json_headers(live, len(body)) + [(b"Transfer-Encoding", b"chunked")]
    with nothing_changes():
        exchange(live, raw_request("POST", b"/api/v1/runs", headers, body)).error((400, 411))
    assert_serving(live)


def test_a_foreign_host_header_is_an_api_error(live):
    for host in (b"evil.example", b"127.0.0.1@evil.example", b""):
        request = raw_request("GET", b"/api/v1/runs", json_headers(live))
        request = request.replace(b"Host: 127.0.0.1", b"Host: " + host, 1)
        reply = exchange(live, request)
        reply.error(400)
        assert b"evil" not in reply.data, "the answer does not echo the Host back"
    assert_serving(live)


def test_a_refusal_keeps_the_connection_usable(live, users):
    _, read_key = ApiToken.issue(user=users["teammate"], scopes=["read"])
    body = json.dumps(START).encode()
    as_text = [json_headers(live)[0], (b"Content-Type", b"text/plain")]
    as_text.append((b"Content-Length", str(len(body)).encode()))
    refusals = [
        ("401", b"/api/v1/runs", json_headers(live, len(body), token="trl_nope"), body),
        ("403", b"/api/v1/runs", json_headers(live, len(body), token=read_key), body),
        ("405", b"/api/v1/health", json_headers(live, len(body)), body),
        ("415", b"/api/v1/runs", as_text, body),
        ("404", b"/api/v1/nothing-here", json_headers(live, len(body)), body),
        ("413", b"/api/v1/runs", json_headers(live, LIMIT + 1), padded(START, LIMIT + 1)),
    ]
    broken = []
    with nothing_changes():
        for status, path, headers, data in refusals:
            request = raw_request("POST", path, headers, data)
            first, second = keep_alive(
                live, request, b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            assert first.status == int(status), first.data[:300]
            if first.headers.get("connection", "").lower() != "close" and second.status != 200:
                broken.append(status)
    assert not broken, f"connection dropped unannounced after: {broken}"
