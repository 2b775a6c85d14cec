"""`trellis serve` refuses bad settings with one line, before starting anything."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {"TRELLIS_WEB_WORKERS": "abc"}, "TRELLIS_WEB_WORKERS='abc' is not a whole number"),
        ([], {"TRELLIS_PORT": "80; rm -rf /"}, "TRELLIS_PORT='80; rm -rf /' is not a whole number"),
        (["--port", "0"], {}, "--port 0 is not a TCP port"),
        (["--web-workers", "0"], {}, "--web-workers must be at least 1"),
    ],
)
def test_serve_refuses_bad_settings_in_one_line(args, env, message):
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", "serve", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr.strip() == f"CommandError: {message}"
    assert "Trellis on" not in done.stdout, "nothing was started"
