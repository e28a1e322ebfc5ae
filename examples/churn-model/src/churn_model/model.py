"""The model as it is served: the JSON file model-server loads (model-server/src/model.rs).

`{"kind": "logistic", "features": [...], "weights": [...], "bias": b, "labels": [neg, pos],
"threshold": t}` scores `sigmoid(w·x + b)` on raw features. Training standardises the
features first; exporting folds the standardisation into the weights and the bias, so the
served model gives the trained model's probabilities on the raw values a client sends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .contract import ContractError, local_path

MODEL_FILE = "model.json"
# Significant digits written: enough that the served model is the trained one to 1e-12,
# few enough that the last bits of floating-point noise never change the file.
DIGITS = 12


@dataclass(frozen=True)
class ServedModel:
    features: tuple[str, ...]
    weights: np.ndarray
    bias: float
    labels: tuple[str, str]
    threshold: float

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """P(labels[1]) for each row of x, computed as model-server computes it."""
        if x.shape[1] != len(self.weights):
            raise ValueError(f"rows have {x.shape[1]} features, the model takes {len(self.weights)}")
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.probabilities(x) >= self.threshold).astype(np.int64)


def fold(pipeline: Pipeline, features: tuple[str, ...], labels: tuple[str, str], threshold: float = 0.5) -> ServedModel:
    """The served form of a StandardScaler + LogisticRegression pipeline."""
    scaler: StandardScaler = pipeline.named_steps["scale"]
    clf: LogisticRegression = pipeline.named_steps["classify"]
    w = clf.coef_[0] / scaler.scale_
    b = float(clf.intercept_[0] - np.dot(w, scaler.mean_))
    return ServedModel(features, w, b, labels, threshold)


def _number(x: float) -> float:
    return float(format(float(x), f".{DIGITS}g"))


def dumps(model: ServedModel) -> bytes:
    """The file's bytes: sorted keys, rounded numbers, one trailing newline; the same model
    always gives the same bytes."""
    doc = {
        "kind": "logistic",
        "features": list(model.features),
        "weights": [_number(w) for w in model.weights],
        "bias": _number(model.bias),
        "labels": list(model.labels),
        "threshold": _number(model.threshold),
    }
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def loads(text: bytes) -> ServedModel:
    doc = json.loads(text)
    if doc.get("kind") != "logistic":
        raise ContractError(f"model kind {doc.get('kind')!r}: only logistic models are scored here")
    weights = np.asarray(doc["weights"], dtype=np.float64)
    features = tuple(doc.get("features") or ())
    if features and len(features) != len(weights):
        raise ContractError(f"{len(features)} features but {len(weights)} weights")
    return ServedModel(features, weights, float(doc.get("bias", 0.0)), tuple(doc["labels"]), float(doc["threshold"]))


def model_path(uri: str) -> Path:
    """The model file a URI names: the file itself, or model.json in the directory it names."""
    path = local_path(uri)
    return path / MODEL_FILE if uri.endswith("/") or path.is_dir() else path


def load(uri: str) -> tuple[ServedModel, Path]:
    path = model_path(uri)
    return loads(path.read_bytes()), path


def write(directory: Path, model: ServedModel) -> Path:
    """Writes model.json into the directory, atomically: a retried pod never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    partial = directory / f".{MODEL_FILE}.partial"
    partial.write_bytes(dumps(model))
    os.replace(partial, path)
    return path
