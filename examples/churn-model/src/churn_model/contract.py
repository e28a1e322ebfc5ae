"""The pipeline's side of a stage: the MODELSHIP_* environment and the result document.

Every stage reads its inputs from the environment the operator sets (docs/pipelines.md,
"The environment contract") and reports through its termination message, a JSON document
of at most 4096 bytes ("Results: the termination message").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

SCHEMA_VERSION = 1
# The exit code that tells the operator "the check failed" (no retries) from a crash.
EXIT_CHECK_FAILED = 3
# The kubelet keeps at most this many bytes of a termination message.
MAX_RESULT_BYTES = 4096
MAX_METRICS = 64
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$")
DEFAULT_RESULT_FILE = "/dev/termination-log"


class ContractError(Exception):
    """The environment or a result does not follow the pipeline's contract."""


@dataclass(frozen=True)
class Environment:
    stage: str
    run: str
    data_uri: str
    data_version: str
    seed: int | None
    candidate_uri: str
    candidate_version: str
    artifact_uri: str
    artifact_sha256: str
    baseline_uri: str
    baseline_version: str
    service_url: str
    result_file: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Environment":
        env = os.environ if env is None else env
        seed_text = env.get("MODELSHIP_SEED", "")
        try:
            seed = int(seed_text) if seed_text else None
        except ValueError:
            raise ContractError(f"MODELSHIP_SEED is {seed_text!r}, not an integer") from None
        return cls(
            stage=env.get("MODELSHIP_STAGE", ""),
            run=env.get("MODELSHIP_RUN", ""),
            data_uri=env.get("MODELSHIP_DATA_URI", ""),
            data_version=env.get("MODELSHIP_DATA_VERSION", ""),
            seed=seed,
            candidate_uri=env.get("MODELSHIP_CANDIDATE_URI", ""),
            candidate_version=env.get("MODELSHIP_CANDIDATE_VERSION", ""),
            artifact_uri=env.get("MODELSHIP_ARTIFACT_URI", ""),
            artifact_sha256=env.get("MODELSHIP_ARTIFACT_SHA256", ""),
            baseline_uri=env.get("MODELSHIP_BASELINE_URI", ""),
            baseline_version=env.get("MODELSHIP_BASELINE_VERSION", ""),
            service_url=env.get("MODELSHIP_SERVICE_URL", ""),
            result_file=Path(env.get("MODELSHIP_RESULT_FILE") or DEFAULT_RESULT_FILE),
        )

    def require(self, name: str) -> str:
        """The value of a variable a stage cannot work without."""
        value = getattr(self, name)
        if value is None or value == "":
            raise ContractError(f"MODELSHIP_{name.upper()} is not set")
        return value

    def require_seed(self) -> int:
        if self.seed is None:
            raise ContractError("MODELSHIP_SEED is not set")
        return self.seed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def local_path(uri: str) -> Path:
    """The file a `file://` URI (or a plain path) names; other schemes are not readable here."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return Path(uri)
    if scheme != "file":
        raise ContractError(f"{uri!r}: only file:// URIs are supported, not {scheme}://")
    return Path(rest)


def result_document(
    metrics: Mapping[str, float],
    *,
    baseline_metrics: Mapping[str, float] | None = None,
    artifact: Mapping[str, str] | None = None,
    dataset_digest: str | None = None,
) -> bytes:
    """The result as the operator parses it, or ContractError saying what would be refused."""
    doc: dict[str, object] = {"schemaVersion": SCHEMA_VERSION, "metrics": _checked(metrics, "metrics")}
    if baseline_metrics is not None:
        doc["baselineMetrics"] = _checked(baseline_metrics, "baselineMetrics")
    if artifact is not None:
        doc["artifact"] = dict(artifact)
    if dataset_digest is not None:
        doc["datasetDigest"] = dataset_digest
    text = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if len(text) > MAX_RESULT_BYTES:
        raise ContractError(f"the result is {len(text)} bytes, more than the {MAX_RESULT_BYTES} a termination message keeps")
    return text


def _checked(metrics: Mapping[str, float], field: str) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise ContractError(f"{field} has {len(metrics)} entries, at most {MAX_METRICS} are read")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not METRIC_NAME.match(name):
            raise ContractError(f"{field}.{name} is not a valid metric name")
        value = float(value)
        # JSON has no NaN or infinity; the operator would refuse the document.
        if not math.isfinite(value):
            raise ContractError(f"{field}.{name} is {value}, not a finite number")
        out[name] = round(value, 6)
    return out


def write_result(env: Environment, document: bytes) -> None:
    """Writes the result where the kubelet reads it, and to stderr for the stage's log."""
    env.result_file.write_bytes(document)
    print(document.decode(), file=sys.stderr)
