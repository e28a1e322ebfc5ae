"""The figures a model is judged by, on labels and P(positive)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score, roc_auc_score

from .model import ServedModel


def score(m: ServedModel, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    p = m.probabilities(x)
    predicted = (p >= m.threshold).astype(np.int64)
    return {
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(y, predicted)),
        "auc": float(roc_auc_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
    }
