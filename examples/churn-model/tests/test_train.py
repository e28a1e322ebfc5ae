import json

import numpy as np
import pytest

from churn_model import contract, data, evaluate, model, train


def train_to(stage, name, *args, **env):
    code, result = stage(train.main, *args, candidate_uri=stage.candidate_uri(name), **env)
    assert code == 0
    return result


def test_same_inputs_give_the_same_bytes(stage):
    a = train_to(stage, "a")
    b = train_to(stage, "b")
    assert a["artifact"]["sha256"] == b["artifact"]["sha256"]
    path_a = contract.local_path(a["artifact"]["uri"])
    path_b = contract.local_path(b["artifact"]["uri"])
    assert path_a != path_b and path_a.read_bytes() == path_b.read_bytes()
    assert a["datasetDigest"] == b["datasetDigest"] == data.load("v1").train.digest()


def test_another_seed_data_version_or_hyperparameter_gives_another_model(stage):
    base = train_to(stage, "a")["artifact"]["sha256"]
    assert train_to(stage, "v2", data_version="v2")["artifact"]["sha256"] != base
    assert train_to(stage, "c", "--c", "0.1")["artifact"]["sha256"] != base


def test_the_result_names_the_file_written_below_the_candidate(stage):
    result = train_to(stage, "a")
    assert result["schemaVersion"] == 1
    assert result["artifact"]["uri"] == stage.candidate_uri("a") + "model.json"
    path = contract.local_path(result["artifact"]["uri"])
    assert contract.sha256_file(path) == result["artifact"]["sha256"]
    assert result["metrics"]["train_rows"] == data.load("v1").train.rows


def test_the_file_is_what_model_server_loads(stage):
    path = contract.local_path(train_to(stage, "a")["artifact"]["uri"])
    doc = json.loads(path.read_bytes())
    # model-server's Model refuses unknown fields (deny_unknown_fields).
    assert set(doc) == {"kind", "features", "weights", "bias", "labels", "threshold"}
    assert doc["kind"] == "logistic" and doc["labels"] == ["benign", "malignant"] and doc["threshold"] == 0.5
    assert doc["features"] == list(data.FEATURES) and len(doc["weights"]) == len(data.FEATURES)
    assert all(isinstance(w, float) and np.isfinite(w) for w in doc["weights"] + [doc["bias"]])


def test_the_served_model_gives_the_trained_models_probabilities():
    dataset = data.load("v1")
    pipeline = train.fit(dataset.train, seed=42, c=1.0, max_iter=1000)
    served = model.loads(model.dumps(model.fold(pipeline, data.FEATURES, data.LABELS)))
    for table in (dataset.train, dataset.holdout):
        x = table.matrix()
        want = pipeline.predict_proba(x)[:, 1]
        assert np.max(np.abs(served.probabilities(x) - want)) < 1e-9
        assert np.array_equal(served.predict(x), pipeline.predict(x))


@pytest.mark.parametrize("args", [["--c", "1e-6"], ["--max-iter", "1"]])
def test_a_hyperparameter_makes_a_worse_model(stage, args):
    good = stage.candidate_uri("good") + "model.json"
    worse = stage.candidate_uri("worse") + "model.json"
    train_to(stage, "good")
    train_to(stage, "worse", *args)
    _, result = stage(evaluate.main, artifact_uri=worse, baseline_uri=good)
    candidate, production = result["metrics"], result["baselineMetrics"]
    assert candidate["f1"] < production["f1"] - 0.05
    assert candidate["log_loss"] > production["log_loss"]


def test_a_candidate_uri_that_is_not_a_directory_is_refused(stage):
    with pytest.raises(contract.ContractError, match="trailing /"):
        stage(train.main, candidate_uri="file:///tmp/model.json")
