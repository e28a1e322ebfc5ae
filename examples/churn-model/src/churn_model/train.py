"""The train stage: fits the model on the data version's training rows with MODELSHIP_SEED and
writes it, in the form model-server serves, to MODELSHIP_CANDIDATE_URI.

The same code, data version, seed and hyperparameters write the same bytes.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from . import contract, data, model
from .stage import run


def fit(train: data.Table, seed: int, c: float, max_iter: int) -> Pipeline:
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=c, max_iter=max_iter, solver="lbfgs", random_state=seed)),
        ]
    )
    return pipeline.fit(train.matrix(), train.target)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m churn_model.train", description=__doc__)
    p.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength (1e-6 underfits)")
    p.add_argument("--max-iter", type=int, default=1000, help="solver iterations (1 stops far from the optimum)")
    p.add_argument("--threshold", type=float, default=0.5, help="the probability at or above which the label is positive")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = contract.Environment.from_env()
    data.check_uri(env.data_uri)
    dataset = data.load(env.require("data_version"))
    candidate = env.require("candidate_uri")
    if not candidate.endswith("/"):
        raise contract.ContractError(f"MODELSHIP_CANDIDATE_URI {candidate!r} is not a directory (no trailing /)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipeline = fit(dataset.train, env.require_seed(), args.c, args.max_iter)
    for w in caught:
        # A capped solver is allowed (it is how a worse model is made on purpose), but said.
        print(f"warning: {w.message}", file=sys.stderr)

    served = model.fold(pipeline, data.FEATURES, data.LABELS, args.threshold)
    path = model.write(contract.local_path(candidate), served)
    # The artifact is the file model-server loads: MODEL_URI of the integration stage.
    artifact = {"uri": candidate + model.MODEL_FILE, "sha256": contract.sha256_file(path)}
    metrics = {
        "train_rows": dataset.train.rows,
        "train_accuracy": float(pipeline.score(dataset.train.matrix(), dataset.train.target)),
        "iterations": int(pipeline.named_steps["classify"].n_iter_[0]),
    }
    contract.write_result(
        env, contract.result_document(metrics, artifact=artifact, dataset_digest=dataset.train.digest())
    )
    return 0


if __name__ == "__main__":
    run(main)
