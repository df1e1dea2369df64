"""A generation replica SIGKILLed under load: Ray Serve replaces it, every in-flight request ends
(answered, retried before its first token, or a clear 5xx / stream error event; none hangs),
and the service answers again. `measure_replica_kill` is also what docs/serving.md quotes."""

from __future__ import annotations

import json

import pytest

from pipelines.serve.faults import measure_replica_kill
from pipelines.serve.process import ServerProcess

pytestmark = pytest.mark.slow


def test_serve_survives_a_killed_generation_replica(tiny_checkpoint, pictures) -> None:
    with ServerProcess(["--model", str(tiny_checkpoint)]) as server:
        report = measure_replica_kill(server.base_url, "tiny-vlora", pictures, in_flight=6)
        assert server.stop() == 0
        assert server.leftovers() == []
    outcomes = report["in_flight"]
    assert len(outcomes) == 6
    assert report["hung"] == 0
    for outcome in outcomes:
        # answered in full, or failed with a 5xx (non-streaming) / an error event (streaming)
        assert outcome["result"] in {"answered", "http_5xx", "stream_error"}, outcome
        if outcome["result"] == "http_5xx":
            assert outcome["status"] in {500, 503, 504}
        if outcome["result"] == "stream_error":  # the stream had started: 200, then the error
            assert outcome["status"] == 200 and outcome["type"] == "server_error"
        if outcome["result"] != "answered":
            assert "replica" in outcome["message"] or "unavailable" in outcome["message"]
    assert report["failed"] >= 1  # the kill really hit requests that were generating
    assert report["new_pid"] != report["killed_pid"]
    assert 0 < report["gap_s"] < 180
    print(json.dumps({k: v for k, v in report.items() if k != "in_flight"}))
