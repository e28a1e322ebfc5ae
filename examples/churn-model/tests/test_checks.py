import textwrap

from churn_model import checks, contract


def project(tmp_path, test_body, module="x = 1\n"):
    src, tests = tmp_path / "src", tmp_path / "tests"
    src.mkdir()
    tests.mkdir()
    (src / "mod.py").write_text(module)
    (tests / "test_it.py").write_text(textwrap.dedent(test_body))
    return ["--src", str(src), "--tests", str(tests)]


def test_clean_code_and_passing_tests_pass(stage, tmp_path):
    code, result = stage(checks.main, *project(tmp_path, "def test_ok():\n    assert True\n"))
    assert code == 0
    assert result["metrics"] == {"lint_findings": 0, "tests": 1, "test_failures": 0, "tests_skipped": 0}


def test_a_failing_test_fails_the_checks(stage, tmp_path):
    code, result = stage(checks.main, *project(tmp_path, "def test_ok():\n    pass\ndef test_no():\n    assert 1 == 2\n"))
    assert code == contract.EXIT_CHECK_FAILED
    assert result["metrics"]["tests"] == 2 and result["metrics"]["test_failures"] == 1


def test_a_skipped_test_fails_the_checks(stage, tmp_path):
    body = "import pytest\n@pytest.mark.skip\ndef test_later():\n    pass\n"
    code, result = stage(checks.main, *project(tmp_path, body))
    assert code == contract.EXIT_CHECK_FAILED and result["metrics"]["tests_skipped"] == 1


def test_a_lint_finding_fails_the_checks(stage, tmp_path):
    code, result = stage(checks.main, *project(tmp_path, "def test_ok():\n    pass\n", module="import os\n"))
    assert code == contract.EXIT_CHECK_FAILED and result["metrics"]["lint_findings"] == 1
