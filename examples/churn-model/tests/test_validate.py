import numpy as np
import pytest

from churn_model import contract, data, validate, validation


@pytest.mark.parametrize("version", ["v1", "v2", "v5"])
def test_samples_of_the_same_population_pass(stage, version):
    code, result = stage(validate.main, data_version=version)
    assert code == 0
    m = result["metrics"]
    assert m["schema_violations"] == 0 and m["drifted_features"] == 0
    assert m["psi_max"] < validation.PSI_LIMIT and m["ks_min_pvalue"] > validation.KS_PVALUE_LIMIT
    assert result["datasetDigest"] == data.load(version).digest()


def test_drifted_data_fails_with_its_ks_and_psi(stage):
    code, result = stage(validate.main, data_version="drifted-v2")
    assert code == contract.EXIT_CHECK_FAILED
    m = result["metrics"]
    assert m["schema_violations"] == 0
    assert m["drifted_features"] >= 5
    assert m["psi_max"] > 1.0 and m["ks_max"] > 0.5 and m["ks_min_pvalue"] < 1e-10
    # The worst features are named, each with both figures.
    assert m["psi.mean_fractal_dimension"] > validation.PSI_LIMIT
    assert m["ks.mean_fractal_dimension"] > 0.5
    # Only the scaled features drifted.
    assert all(k.split(".", 1)[1].startswith("mean_") for k in m if k.startswith(("ks.", "psi.")))


def test_corrupted_data_fails_the_schema(stage, capsys):
    code, result = stage(validate.main, data_version="corrupted-v1")
    assert code == contract.EXIT_CHECK_FAILED
    m = result["metrics"]
    assert m["schema_violations"] == 3
    assert m["missing_values"] > 0 and m["non_numeric_columns"] == 1 and m["out_of_range_values"] == 8
    err = capsys.readouterr().err
    assert "mean_area holds object values" in err and "mean_texture has" in err and "outside [0," in err


def test_missing_and_reordered_columns_fail():
    t = data.load("v1").train
    ref = validation.reference()
    columns = dict(t.columns)
    del columns["worst_area"]
    report = validation.check(data.Table(columns, t.target), ref)
    assert not report.passed and "missing ['worst_area']" in report.schema_errors[0]
    reordered = dict(reversed(list(t.columns.items())))
    assert not validation.check(data.Table(reordered, t.target), ref).passed


def test_psi():
    rng = np.random.RandomState(0)
    ref = rng.normal(size=5000)
    assert validation.psi(ref, rng.normal(size=5000)) < 0.02
    assert validation.psi(ref, rng.normal(loc=1.0, size=5000)) > 0.5


def test_an_unknown_version_is_a_misconfiguration_not_a_failed_check(stage):
    with pytest.raises(data.UnknownVersion):
        stage(validate.main, data_version="2026-12-01")
