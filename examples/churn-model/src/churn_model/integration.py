"""The integration stage: calls the candidate served at MODELSHIP_SERVICE_URL and reports its
latency and whether its answers keep the serving contract.

`POST /predict` with `{"instances": [[...], ...]}` must answer one prediction per instance,
each with a `score` (a probability, within [0, 1]) and a `label` of the model's two, and
`model_version` equal to MODELSHIP_CANDIDATE_VERSION. The scores must be the ones the
artifact gives (the served model is the trained one). Exits 3 when the contract is broken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

import numpy as np

from . import contract, data, model
from .stage import run

# Served scores may differ from the file's by float formatting only.
SCORE_TOLERANCE = 1e-9


def post(url: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def violations(answer: Any, expected: np.ndarray, labels: tuple[str, str], version: str) -> list[str]:
    """What is wrong with one answer to the instances whose expected scores are given."""
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        return [f"the answer has no predictions list: {str(answer)[:200]}"]
    found: list[str] = []
    if version and answer.get("model_version") != version:
        found.append(f"model_version is {answer.get('model_version')!r}, not {version!r}")
    predictions = answer["predictions"]
    if len(predictions) != len(expected):
        return found + [f"{len(predictions)} predictions for {len(expected)} instances"]
    for i, (p, want) in enumerate(zip(predictions, expected)):
        score = p.get("score") if isinstance(p, dict) else None
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            found.append(f"prediction {i}: score {score!r} is not a number")
            continue
        if not 0.0 <= score <= 1.0:
            found.append(f"prediction {i}: score {score} is not a probability")
        if abs(score - want) > SCORE_TOLERANCE:
            found.append(f"prediction {i}: score {score}, the artifact gives {want}")
        if p.get("label") not in labels:
            found.append(f"prediction {i}: label {p.get('label')!r} is not one of {list(labels)}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m churn_model.integration", description=__doc__)
    p.add_argument("--requests", type=int, default=200, help="single-instance requests timed")
    p.add_argument("--batch", type=int, default=32, help="instances in the batch request")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    args = p.parse_args(argv)
    env = contract.Environment.from_env()
    url = env.require("service_url").rstrip("/") + "/predict"
    served, _ = model.load(env.artifact_uri or env.require("candidate_uri"))
    dataset = data.load(env.require("data_version"))
    x = dataset.holdout.matrix()
    expected = served.probabilities(x)

    problems: list[str] = []
    latencies: list[float] = []
    errors = 0
    for i in range(args.requests):
        row = i % len(x)
        start = time.perf_counter()
        status, answer = post(url, {"instances": [x[row].tolist()]}, args.timeout)
        latencies.append((time.perf_counter() - start) * 1000)
        if status != 200:
            errors += 1
            problems.append(f"request {i}: HTTP {status}")
            continue
        problems += violations(answer, expected[row : row + 1], served.labels, env.candidate_version)
    status, answer = post(url, {"instances": x[: args.batch].tolist()}, args.timeout)
    if status != 200:
        errors += 1
        problems.append(f"batch request: HTTP {status}")
    else:
        problems += violations(answer, expected[: args.batch], served.labels, env.candidate_version)
    # A request for another number of features must be refused, not answered.
    status, _ = post(url, {"instances": [[1.0, 2.0]]}, args.timeout)
    if status != 400:
        problems.append(f"an instance with 2 features was answered with HTTP {status}, not 400")

    lat = np.asarray(latencies)
    metrics = {
        "requests": args.requests + 2,
        "errors": errors,
        "contract_violations": len(problems),
        "p50_latency_ms": float(np.percentile(lat, 50)),
        "p90_latency_ms": float(np.percentile(lat, 90)),
        "p99_latency_ms": float(np.percentile(lat, 99)),
        "max_latency_ms": float(lat.max()),
    }
    contract.write_result(env, contract.result_document(metrics))
    for problem in problems[:20]:
        print(f"contract: {problem}", file=sys.stderr)
    return contract.EXIT_CHECK_FAILED if problems else 0


if __name__ == "__main__":
    run(main)
