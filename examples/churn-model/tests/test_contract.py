import json

import pytest

from churn_model import contract


def test_result_document_is_what_the_operator_reads():
    doc = json.loads(contract.result_document({"f1": 0.9}, baseline_metrics={"f1": 0.8},
                                              artifact={"uri": "file:///m/", "sha256": "0" * 64},
                                              dataset_digest="sha256:ab"))
    assert doc == {"schemaVersion": 1, "metrics": {"f1": 0.9}, "baselineMetrics": {"f1": 0.8},
                   "artifact": {"uri": "file:///m/", "sha256": "0" * 64}, "datasetDigest": "sha256:ab"}


@pytest.mark.parametrize("metrics, message", [
    ({"f 1": 1.0}, "not a valid metric name"),
    ({"1f": 1.0}, "not a valid metric name"),
    ({"f1": float("nan")}, "not a finite number"),
    ({f"m{i}": 1.0 for i in range(65)}, "at most 64"),
])
def test_results_the_operator_would_refuse_are_not_written(metrics, message):
    with pytest.raises(contract.ContractError, match=message):
        contract.result_document(metrics)


def test_a_result_too_long_for_a_termination_message_is_refused():
    with pytest.raises(contract.ContractError, match="4096"):
        contract.result_document({f"metric_with_a_rather_long_name_{i:02}": 0.123456 for i in range(64)},
                                 artifact={"uri": "file:///" + "x" * 2000, "sha256": "0" * 64})


def test_environment():
    env = contract.Environment.from_env({"MODELSHIP_SEED": "7"})
    assert env.seed == 7
    assert str(env.result_file) == "/dev/termination-log"
    with pytest.raises(contract.ContractError, match="MODELSHIP_DATA_VERSION"):
        env.require("data_version")
    with pytest.raises(contract.ContractError, match="not an integer"):
        contract.Environment.from_env({"MODELSHIP_SEED": "x"})


def test_local_paths():
    assert str(contract.local_path("file:///a/b/")) == "/a/b"
    assert str(contract.local_path("/a/b")) == "/a/b"
    with pytest.raises(contract.ContractError, match="s3://"):
        contract.local_path("s3://models/churn/")
