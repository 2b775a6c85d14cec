"""Request framing the WSGI server leaves to the application.

uWSGI's HTTP socket passes on what it cannot frame: a Content-Length that is not a
number reaches Django, which reads the body as empty and would act on the request
without it; a chunked body is not decoded at all. Both are refused here, in the error
shape of the API, as is a request with both headers (RFC 9112 §6.1: a proxy in front
could frame it otherwise, the way requests are smuggled).

After a refusal that never read the body (401, 403, 413, 415, …) the server would drop
the keep-alive connection without a word, and a pooling client's next request would
fail on it. A short unread rest is read and dropped so the connection stays usable; a
long one gets `Connection: close`.
"""

import json
import re

# What is read and dropped to keep a connection open; more, and it is closed.
DRAIN_LIMIT = 64 * 1024
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


class RequestFraming:
    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        refused = framing_problem(environ)
        if refused:
            return refuse(start_response, *refused)
        declared = int(environ.get("CONTENT_LENGTH") or 0)
        if not declared:
            return self.application(environ, start_response)
        body = environ["wsgi.input"] = CountedInput(environ["wsgi.input"])
        expects_continue = environ.get("HTTP_EXPECT", "").lower() == "100-continue"

        def starting(status, headers, exc_info=None):
            unread = declared - body.consumed
            if unread > 0 and (expects_continue or unread > DRAIN_LIMIT or not body.drain(unread)):
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.application(environ, starting)


def framing_problem(environ) -> tuple[int, str, str] | None:
    """(status, message, code) for a request whose body cannot be framed, else None."""
    length = environ.get("CONTENT_LENGTH", "")
    if environ.get("HTTP_TRANSFER_ENCODING"):
        if length:
            return (
                400,
                "a request may not have both Content-Length and Transfer-Encoding",
                ("bad_request"),
            )
        return (
            411,
            "send the body with a Content-Length; chunked bodies are not accepted",
            ("length_required"),
        )
    if length and not _WHOLE_NUMBER.fullmatch(length):
        return 400, "Content-Length must be a whole number of bytes", "bad_request"
    return None


def refuse(start_response, status: int, message: str, code: str):
    body = json.dumps({"error": message, "code": code, "details": {}}).encode()
    reason = {400: "Bad Request", 411: "Length Required"}[status]
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),  # the body, if any, was not read
        ],
    )
    return [body]


class CountedInput:
    """`wsgi.input`, counting what the application read."""

    def __init__(self, stream):
        self.stream, self.consumed = stream, 0

    def read(self, *args):
        data = self.stream.read(*args)
        self.consumed += len(data)
        return data

    def readline(self, *args):
        line = self.stream.readline(*args)
        self.consumed += len(line)
        return line

    def readlines(self, *args):
        lines = self.stream.readlines(*args)
        self.consumed += sum(len(line) for line in lines)
        return lines

    def __iter__(self):
        return iter(self.readline, b"")

    def drain(self, count: int) -> bool:
        """Read and drop `count` bytes; False if the body ended short or the read failed."""
        try:
            while count > 0:
                data = self.read(min(count, 16 * 1024))
                if not data:
                    return False
                count -= len(data)
        except OSError:
            return False
        return True
