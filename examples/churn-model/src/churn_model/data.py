"""The data: a table of numeric features and a binary label, in deterministic versions.

The rows are scikit-learn's bundled Wisconsin diagnostic breast-cancer table (569 rows, 30
features), which ships inside Debian's python3-sklearn, so nothing is downloaded when a
stage runs. It stands in for the customer table a churn model would read: the label the
model predicts is `malignant` (1) against `benign` (0).

A *data version* (MODELSHIP_DATA_VERSION) names a deterministic variant:

- `v<N>` (N >= 1): a sample of 90 % of the training pool, drawn with seed N;
- `drifted-v<N>`: `v<N>` with the ten `mean_*` features scaled by 1.25, as a recalibrated
  instrument would report them;
- `corrupted-v<N>`: `v<N>` with missing values, a column of strings and values out of range.

The held-out rows (a quarter of the table) are the same in every version, so a candidate and
the production model are always compared on the same rows of one version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

DATA_URI = "sklearn://breast_cancer"
LABELS = ("benign", "malignant")
HOLDOUT_SHARE = 0.25
SAMPLE_SHARE = 0.9
# Fixes which rows are held out; never derived from a version or a run's seed.
HOLDOUT_SEED = 20261203
DRIFT_SCALE = 1.25

_VERSION = re.compile(r"^(?:(drifted|corrupted)-)?v([1-9][0-9]{0,5})$")


class UnknownVersion(ValueError):
    pass


@dataclass(frozen=True)
class Table:
    """Columns as they were read (float64, or object when a column holds other things)."""

    columns: dict[str, np.ndarray]
    target: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.target)

    def matrix(self) -> np.ndarray:
        """The features as a float matrix, in FEATURES order; fails on a non-numeric column."""
        return np.column_stack([np.asarray(self.columns[f], dtype=np.float64) for f in FEATURES])

    def digest(self) -> str:
        """`sha256:` of the names, types and values of every column and the labels."""
        h = hashlib.sha256()
        for name, values in self.columns.items():
            h.update(f"{name}:{values.dtype.str}:".encode())
            if values.dtype == object:
                h.update(repr(values.tolist()).encode())
            else:
                h.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.target, dtype="<i8").tobytes())
        return "sha256:" + h.hexdigest()

    def take(self, index: np.ndarray) -> "Table":
        return Table({n: v[index] for n, v in self.columns.items()}, self.target[index])


@dataclass(frozen=True)
class Dataset:
    version: str
    train: Table
    holdout: Table

    def all_rows(self) -> Table:
        return Table(
            {n: np.concatenate([self.train.columns[n], self.holdout.columns[n]]) for n in self.train.columns},
            np.concatenate([self.train.target, self.holdout.target]),
        )

    def digest(self) -> str:
        return self.all_rows().digest()


def _bundled() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    names = tuple(str(n).replace(" ", "_") for n in bunch.feature_names)
    # scikit-learn's target is 0 for malignant: the model predicts malignant as the positive class.
    return names, np.asarray(bunch.data, dtype=np.float64), (bunch.target == 0).astype(np.int64)


FEATURES, _X, _Y = _bundled()


def check_uri(uri: str) -> None:
    """The data lives in the image; a pipeline that names other data is misconfigured."""
    if uri and uri != DATA_URI:
        raise UnknownVersion(f"MODELSHIP_DATA_URI is {uri!r}; this project reads {DATA_URI!r}")


def load(version: str) -> Dataset:
    match = _VERSION.match(version)
    if not match:
        raise UnknownVersion(
            f"data version {version!r} is not one of v<N>, drifted-v<N> or corrupted-v<N> (N >= 1)"
        )
    variant, sample = match.group(1), int(match.group(2))
    order = np.random.RandomState(HOLDOUT_SEED).permutation(len(_Y))
    n_holdout = int(round(len(_Y) * HOLDOUT_SHARE))
    holdout_rows, pool = np.sort(order[:n_holdout]), order[n_holdout:]
    train_rows = np.sort(np.random.RandomState(sample).choice(pool, int(len(pool) * SAMPLE_SHARE), replace=False))

    def table(rows: np.ndarray) -> Table:
        return Table({f: _X[rows, i].copy() for i, f in enumerate(FEATURES)}, _Y[rows].copy())

    train, holdout = table(train_rows), table(holdout_rows)
    if variant == "drifted":
        train, holdout = _drift(train), _drift(holdout)
    elif variant == "corrupted":
        train, holdout = _corrupt(train, sample), _corrupt(holdout, sample + 1)
    return Dataset(version, train, holdout)


def _drift(t: Table) -> Table:
    return Table({n: v * DRIFT_SCALE if n.startswith("mean_") else v for n, v in t.columns.items()}, t.target)


def _corrupt(t: Table, seed: int) -> Table:
    rng = np.random.RandomState(seed)
    columns = dict(t.columns)
    texture = columns["mean_texture"].copy()
    texture[rng.choice(t.rows, max(1, t.rows // 20), replace=False)] = np.nan
    columns["mean_texture"] = texture
    # An export that wrote the unit next to the number.
    columns["mean_area"] = np.array([f"{a:.1f} um2" for a in columns["mean_area"]], dtype=object)
    smoothness = columns["mean_smoothness"].copy()
    bad = rng.choice(t.rows, 4, replace=False)
    smoothness[bad[:2]] = -1.0
    smoothness[bad[2:]] = 1e3
    columns["mean_smoothness"] = smoothness
    return Table(columns, t.target)
