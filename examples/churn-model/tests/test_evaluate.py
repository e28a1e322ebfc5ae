import json

from churn_model import contract, data, evaluate, model, train
from test_train import train_to


def test_candidate_and_production_on_the_same_rows(stage):
    a = train_to(stage, "a")
    b = train_to(stage, "b", data_version="v2")
    code, result = stage(evaluate.main, artifact_uri=a["artifact"]["uri"], artifact_sha256=a["artifact"]["sha256"],
                         baseline_uri=b["artifact"]["uri"], baseline_version="churn-v1.0.0")
    assert code == 0
    # What was scored, as the operator compares it with train's report.
    assert result["artifact"] == a["artifact"]
    assert result["datasetDigest"] == data.load("v1").holdout.digest()
    m, base = result["metrics"], result["baselineMetrics"]
    assert set(base) == {"f1", "precision", "recall", "accuracy", "auc", "log_loss"} <= set(m)
    assert m["holdout_rows"] == data.load("v1").holdout.rows and m["baseline_scored"] == 1
    assert 0.9 < m["f1"] <= 1 and 0.95 < m["auc"] <= 1 and 0 < m["log_loss"] < 0.3
    assert 0.9 < base["f1"] <= 1


def test_without_production_the_candidate_alone(stage):
    a = train_to(stage, "a")
    code, result = stage(evaluate.main, artifact_uri=a["artifact"]["uri"])
    assert code == 0 and "baselineMetrics" not in result and result["metrics"]["baseline_scored"] == 0


def test_a_production_model_with_other_features_is_not_scored(stage, capsys):
    a = train_to(stage, "a")
    other = stage.tmp / "other.json"
    other.write_text(json.dumps({"kind": "logistic", "features": ["a", "b", "c"], "weights": [1, 2, 3], "bias": 0,
                                 "labels": ["stay", "churn"], "threshold": 0.5}))
    code, result = stage(evaluate.main, artifact_uri=a["artifact"]["uri"], baseline_uri=f"file://{other}")
    assert code == 0 and "baselineMetrics" not in result and result["metrics"]["baseline_scored"] == 0
    assert "takes other features" in capsys.readouterr().err


def test_the_digest_reported_is_of_the_file_scored(stage):
    a = train_to(stage, "a")
    path = contract.local_path(a["artifact"]["uri"])
    # Another model in the candidate's place: evaluate reports its digest, not train's.
    pipeline = train.fit(data.load("v1").train, seed=42, c=0.01, max_iter=1000)
    model.write(path.parent, model.fold(pipeline, data.FEATURES, data.LABELS))
    _, result = stage(evaluate.main, artifact_uri=a["artifact"]["uri"], artifact_sha256=a["artifact"]["sha256"])
    assert result["artifact"]["sha256"] == contract.sha256_file(path) != a["artifact"]["sha256"]
