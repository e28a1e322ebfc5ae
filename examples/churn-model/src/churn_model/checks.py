"""The checks stage: the project's lint (pyflakes) and its unit tests (pytest).

Exits 3 (a failed check) when the lint finds something or a test fails; reports the counts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from . import contract
from .stage import run

PROJECT = Path(__file__).resolve().parents[2]


def lint(paths: Sequence[Path]) -> list[str]:
    """pyflakes' findings, one a line."""
    done = subprocess.run(
        [sys.executable, "-m", "pyflakes", *map(str, paths)], capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"pyflakes could not run ({done.returncode}): {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line.strip()]


def test(tests: Path) -> dict[str, int]:
    """pytest's counts: tests, failures (errors included) and skipped, from its JUnit report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", str(tests)],
            cwd=PROJECT,
            check=False,
        )
        if not report.exists():
            raise RuntimeError(f"pytest exited {done.returncode} without a report")
        root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None, "a JUnit report has a testsuite"
    count = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    return {"tests": count["tests"], "failures": count["failures"] + count["errors"], "skipped": count["skipped"]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m churn_model.checks", description=__doc__)
    p.add_argument("--src", type=Path, default=PROJECT / "src", help="what the lint reads (with the tests)")
    p.add_argument("--tests", type=Path, default=PROJECT / "tests", help="the unit tests")
    args = p.parse_args(argv)
    env = contract.Environment.from_env()
    findings = lint([args.src, args.tests])
    for finding in findings:
        print(f"lint: {finding}", file=sys.stderr)
    counts = test(args.tests)
    metrics = {
        "lint_findings": len(findings),
        "tests": counts["tests"],
        "test_failures": counts["failures"],
        "tests_skipped": counts["skipped"],
    }
    contract.write_result(env, contract.result_document(metrics))
    # A skipped test proves nothing, so it fails the checks like a failing one.
    return contract.EXIT_CHECK_FAILED if findings or counts["failures"] or counts["skipped"] or not counts["tests"] else 0


if __name__ == "__main__":
    run(main)
