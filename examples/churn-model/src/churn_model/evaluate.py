"""The evaluate stage: scores the candidate (MODELSHIP_ARTIFACT_URI) and, when there is one,
the production model (MODELSHIP_BASELINE_URI) on the same held-out rows.

Both are scored as model-server would serve them, from their model files. The result names
the sha256 of the candidate file scored, which the operator compares with train's.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import contract, data, model, scoring
from .stage import run


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python3 -m churn_model.evaluate", description=__doc__).parse_args(argv)
    env = contract.Environment.from_env()
    data.check_uri(env.data_uri)
    dataset = data.load(env.require("data_version"))
    x, y = dataset.holdout.matrix(), dataset.holdout.target

    uri = env.artifact_uri or env.require("candidate_uri")
    candidate, path = model.load(uri)
    sha256 = contract.sha256_file(path)
    if env.artifact_sha256 and env.artifact_sha256.removeprefix("sha256:") != sha256:
        # Reported as scored: the operator refuses the run and names both digests.
        print(f"warning: {path} has sha256 {sha256}, train reported {env.artifact_sha256}", file=sys.stderr)
    metrics = scoring.score(candidate, x, y)
    metrics["holdout_rows"] = dataset.holdout.rows

    baseline_metrics = None
    if env.baseline_uri:
        baseline, _ = model.load(env.baseline_uri)
        if len(baseline.weights) != len(data.FEATURES) or (baseline.features and baseline.features != data.FEATURES):
            # A production model with other inputs cannot be scored on these rows; the
            # operator then uses the metrics production passed its own gates with.
            print(f"warning: the baseline {env.baseline_version or env.baseline_uri} takes other features; not scored", file=sys.stderr)
            metrics["baseline_scored"] = 0
        else:
            baseline_metrics = scoring.score(baseline, x, y)
            metrics["baseline_scored"] = 1
    else:
        metrics["baseline_scored"] = 0
        print("no production model yet: the candidate alone is scored", file=sys.stderr)

    artifact = {"uri": uri if "://" in uri else f"file://{path}", "sha256": sha256}
    contract.write_result(
        env,
        contract.result_document(
            metrics, baseline_metrics=baseline_metrics, artifact=artifact, dataset_digest=dataset.holdout.digest()
        ),
    )
    return 0


if __name__ == "__main__":
    run(main)
