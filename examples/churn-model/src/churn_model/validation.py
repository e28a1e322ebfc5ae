"""Data checks: the schema, and each feature's distribution against a reference snapshot.

The reference is the training sample of data version `v1`, pinned by its digest: if the
bundled table ever changes, validation refuses to compare against something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import ks_2samp

from . import data

REFERENCE_VERSION = "v1"
REFERENCE_DIGEST = "sha256:3e5c2b66b83e6993d54717bbc74128f8508da63f08d16481061384d74e75770f"
# A value above this many times the reference's largest is out of range (none are negative).
RANGE_FACTOR = 3.0
# Population stability index: above 0.2 is the usual "significant shift".
PSI_LIMIT = 0.2
# Two-sample Kolmogorov–Smirnov: a p-value below this says the samples differ.
KS_PVALUE_LIMIT = 0.001
PSI_BINS = 10
# Per-feature figures reported for at most this many failing features (the message is small).
REPORTED_FEATURES = 8


class ReferenceChanged(RuntimeError):
    pass


@dataclass
class Report:
    rows: int
    schema_errors: list[str] = field(default_factory=list)
    missing_values: int = 0
    non_numeric_columns: int = 0
    out_of_range_values: int = 0
    ks: dict[str, tuple[float, float]] = field(default_factory=dict)  # statistic, p-value
    psi: dict[str, float] = field(default_factory=dict)

    def drifted(self) -> list[str]:
        return [f for f in self.ks if self.ks[f][1] < KS_PVALUE_LIMIT or self.psi[f] > PSI_LIMIT]

    @property
    def passed(self) -> bool:
        return not self.schema_errors and not self.drifted()

    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {
            "rows": self.rows,
            "schema_violations": len(self.schema_errors),
            "missing_values": self.missing_values,
            "non_numeric_columns": self.non_numeric_columns,
            "out_of_range_values": self.out_of_range_values,
            "drifted_features": len(self.drifted()),
        }
        if self.ks:
            m["ks_max"] = max(s for s, _ in self.ks.values())
            m["ks_min_pvalue"] = min(p for _, p in self.ks.values())
            m["psi_max"] = max(self.psi.values())
        for f in sorted(self.drifted(), key=lambda f: -self.psi[f])[:REPORTED_FEATURES]:
            m[f"ks.{f}"] = self.ks[f][0]
            m[f"psi.{f}"] = self.psi[f]
        return m


def reference() -> np.ndarray:
    ref = data.load(REFERENCE_VERSION).train
    if ref.digest() != REFERENCE_DIGEST:
        raise ReferenceChanged(
            f"the reference snapshot ({REFERENCE_VERSION}) has digest {ref.digest()}, not {REFERENCE_DIGEST}: "
            "the bundled data changed; review the checks before pinning the new digest"
        )
    return ref.matrix()


def psi(reference: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of actual against reference, on the reference's deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    observed = np.histogram(actual, edges)[0] / len(actual)
    # An empty bin would make the index infinite; a small floor keeps it finite and large.
    expected, observed = np.clip(expected, 1e-4, None), np.clip(observed, 1e-4, None)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def check(table: data.Table, ref: np.ndarray) -> Report:
    report = Report(rows=table.rows)
    names = list(table.columns)
    if names != list(data.FEATURES):
        missing = sorted(set(data.FEATURES) - set(names))
        extra = sorted(set(names) - set(data.FEATURES))
        report.schema_errors.append(f"columns differ: missing {missing}, unexpected {extra}, or out of order")
    if table.rows == 0:
        report.schema_errors.append("no rows")
        return report
    for i, name in enumerate(data.FEATURES):
        if name not in table.columns:
            continue
        values = table.columns[name]
        if values.dtype.kind != "f":
            report.non_numeric_columns += 1
            report.schema_errors.append(f"{name} holds {values.dtype} values such as {values[0]!r}, not numbers")
            continue
        nan = int(np.isnan(values).sum())
        if nan:
            report.missing_values += nan
            report.schema_errors.append(f"{name} has {nan} missing values")
        finite = values[~np.isnan(values)]
        high = RANGE_FACTOR * ref[:, i].max()
        out = int(((finite < 0) | (finite > high)).sum())
        if out:
            report.out_of_range_values += out
            report.schema_errors.append(f"{name} has {out} values outside [0, {high:.4g}]")
        if len(finite):
            result = ks_2samp(ref[:, i], finite)
            report.ks[name] = (float(result.statistic), float(result.pvalue))
            report.psi[name] = psi(ref[:, i], finite)
    return report
