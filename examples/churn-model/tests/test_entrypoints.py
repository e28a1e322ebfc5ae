"""The stages as the pipeline runs them: `python3 -m churn_model.<stage>`, exit codes included."""

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run(tmp_path, module, **env):
    result = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", f"churn_model.{module}"],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(SRC), "MODELSHIP_SEED": "42",
             "MODELSHIP_RESULT_FILE": str(result), **{f"MODELSHIP_{k.upper()}": v for k, v in env.items()}},
        capture_output=True, text=True, check=False,
    )
    return done, json.loads(result.read_text()) if result.exists() else None


def test_train_then_evaluate(tmp_path):
    candidate = f"file://{tmp_path}/models/churn/v/"
    done, trained = run(tmp_path, "train", data_version="v1", candidate_uri=candidate)
    assert done.returncode == 0, done.stderr
    done, evaluated = run(tmp_path, "evaluate", data_version="v1", candidate_uri=candidate,
                          artifact_uri=trained["artifact"]["uri"], artifact_sha256=trained["artifact"]["sha256"])
    assert done.returncode == 0, done.stderr
    assert evaluated["artifact"] == trained["artifact"]


def test_failed_data_exits_3(tmp_path):
    done, result = run(tmp_path, "validate", data_version="drifted-v1")
    assert done.returncode == 3 and result["metrics"]["drifted_features"] > 0
    assert "failed validation" in done.stderr


def test_a_misconfigured_stage_is_a_crash_that_says_why(tmp_path):
    done, result = run(tmp_path, "validate", data_version="latest")
    assert done.returncode == 2 and result is None
    assert "error: data version 'latest' is not one of" in done.stderr
    done, _ = run(tmp_path, "train", data_version="v1")
    assert done.returncode == 2 and "MODELSHIP_CANDIDATE_URI is not set" in done.stderr
