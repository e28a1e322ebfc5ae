"""The validate stage: the data version's schema and distribution against the reference.

Exits 3 (a failed check) when the data fails, after reporting what failed as metrics.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import contract, data, validation
from .stage import run


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python3 -m churn_model.validate", description=__doc__).parse_args(argv)
    env = contract.Environment.from_env()
    data.check_uri(env.data_uri)
    dataset = data.load(env.require("data_version"))
    report = validation.check(dataset.all_rows(), validation.reference())
    contract.write_result(env, contract.result_document(report.metrics(), dataset_digest=dataset.digest()))
    for error in report.schema_errors:
        print(f"schema: {error}", file=sys.stderr)
    for feature in report.drifted():
        ks, p = report.ks[feature]
        print(f"drift: {feature}: KS {ks:.3f} (p {p:.2g}), PSI {report.psi[feature]:.3f}", file=sys.stderr)
    if not report.passed:
        print(f"data version {dataset.version} failed validation", file=sys.stderr)
        return contract.EXIT_CHECK_FAILED
    return 0


if __name__ == "__main__":
    run(main)
