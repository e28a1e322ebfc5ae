"""The integration stage against a stand-in for model-server's REST API (`POST /predict`),
served from the same model file, which a test can make break the contract."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from churn_model import contract, integration, model
from test_train import train_to


class StandIn:
    def __init__(self, served: model.ServedModel, version: str) -> None:
        self.served, self.version, self.break_with = served, version, None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                x = np.asarray(body["instances"], dtype=np.float64)
                if self.path != "/predict" or x.ndim != 2 or x.shape[1] != len(stand_in.served.weights):
                    return self.answer(400, {"error": "bad instances"})
                p = stand_in.served.probabilities(x)
                predictions = [{"score": float(s), "label": stand_in.served.labels[int(s >= 0.5)]} for s in p]
                answer = {"model_version": stand_in.version, "predictions": predictions}
                if stand_in.break_with:
                    stand_in.break_with(answer)
                self.answer(200, answer)

            def answer(self, status, doc):
                text = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def served(stage):
    uri = train_to(stage, "a")["artifact"]["uri"]
    stand_in = StandIn(model.load(uri)[0], "churn-v1.1.0-2026-12-03-abc123")
    stage.monkeypatch.setenv("MODELSHIP_ARTIFACT_URI", uri)
    stage.monkeypatch.setenv("MODELSHIP_SERVICE_URL", stand_in.url)
    stage.monkeypatch.setenv("MODELSHIP_CANDIDATE_VERSION", stand_in.version)
    yield stand_in
    stand_in.server.shutdown()


def test_a_server_that_keeps_the_contract_passes_with_its_latency(stage, served):
    code, result = stage(integration.main, "--requests", "50")
    assert code == 0
    m = result["metrics"]
    assert m["requests"] == 52 and m["errors"] == 0 and m["contract_violations"] == 0
    assert 0 < m["p50_latency_ms"] <= m["p90_latency_ms"] <= m["p99_latency_ms"] <= m["max_latency_ms"]


def scale_scores(answer):
    for p in answer["predictions"]:
        p["score"] *= 2


def drop_one(answer):
    answer["predictions"].pop()


def wrong_version(answer):
    answer["model_version"] = "churn-v1.0.0"


def string_scores(answer):
    for p in answer["predictions"]:
        p["score"] = str(p["score"])


@pytest.mark.parametrize("breaks, says", [
    (scale_scores, "the artifact gives"),
    (drop_one, "predictions for"),
    (wrong_version, "model_version is"),
    (string_scores, "is not a number"),
])
def test_a_broken_contract_fails_the_check(stage, served, capsys, breaks, says):
    served.break_with = breaks
    code, result = stage(integration.main, "--requests", "5")
    assert code == contract.EXIT_CHECK_FAILED
    assert result["metrics"]["contract_violations"] > 0
    assert says in capsys.readouterr().err


def test_scores_outside_zero_one_are_named():
    expected = np.array([0.5])
    found = integration.violations({"model_version": "v", "predictions": [{"score": 1.5, "label": "benign"}]},
                                   expected, ("benign", "malignant"), "v")
    assert any("not a probability" in f for f in found)
