import numpy as np
import pytest

from churn_model import data


def test_versions_are_deterministic_and_differ():
    a, b, c = data.load("v1"), data.load("v1"), data.load("v2")
    assert a.digest() == b.digest()
    assert a.train.digest() != c.train.digest()
    # The held-out rows do not depend on the version, and never overlap the training rows.
    assert a.holdout.digest() == c.holdout.digest()
    train, held = a.train.matrix(), a.holdout.matrix()
    assert not {tuple(r) for r in train} & {tuple(r) for r in held}


def test_drifted_scales_the_mean_features():
    base, drifted = data.load("v3"), data.load("drifted-v3")
    assert np.allclose(drifted.train.columns["mean_radius"], base.train.columns["mean_radius"] * data.DRIFT_SCALE)
    assert np.array_equal(drifted.train.columns["worst_radius"], base.train.columns["worst_radius"])


def test_corrupted_has_what_an_export_gets_wrong():
    t = data.load("corrupted-v1").train
    assert np.isnan(t.columns["mean_texture"]).any()
    assert t.columns["mean_area"].dtype == object
    assert (t.columns["mean_smoothness"] < 0).any()
    with pytest.raises(ValueError):
        t.matrix()


@pytest.mark.parametrize("version", ["", "v0", "1", "drifted", "drifted-x", "v1-drifted", "latest"])
def test_unknown_versions_are_refused(version):
    with pytest.raises(data.UnknownVersion):
        data.load(version)


def test_other_data_is_refused():
    data.check_uri(data.DATA_URI)
    data.check_uri("")
    with pytest.raises(data.UnknownVersion):
        data.check_uri("s3://datasets/churn")
