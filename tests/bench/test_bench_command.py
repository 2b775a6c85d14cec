"""`trellis bench` end to end, tiny: the chain shape on a throwaway SQLite database."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_chain_json_on_sqlite():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    command = ["bench", "--shape", "chain", "--repeat", "1", "--json", "--scale", "0.1"]
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["database"], result["broker"], result["scale"]) == ("sqlite", "orm", 0.1)
    assert set(result["results"]) == {"chain", "worker_memory", "load_average"}
    chain = result["results"]["chain"]
    assert chain["steps"] == 5
    assert chain["seconds"] > 0 and chain["per_step_ms"] > 0
    # each repeat carries the machine's speed reference taken just before it
    assert chain["speed_reference_ms"] > 0
    reference = result["speed_reference_ms"]
    assert 0 < reference["min"] <= reference["median"] <= reference["max"]
    assert result["results"]["worker_memory"]["processes"] >= 3
    rows = {row["figure"]: row for row in result["targets"]}
    assert set(rows["chain.per_step_ms"]) >= {"target", "value", "ratio", "met"}
    assert rows["fanout.steps_per_s"]["value"] is None  # not measured in this run
