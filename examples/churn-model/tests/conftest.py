from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import pytest

from churn_model import data

Main = Callable[[Sequence[str] | None], int]


class Stage:
    """Runs a stage's main as the pipeline would: MODELSHIP_* set, the result in a file."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp_path
        self.monkeypatch = monkeypatch
        self.result_file = tmp_path / "termination-log"
        for name, value in {
            "MODELSHIP_PIPELINE": "churn",
            "MODELSHIP_RUN": "r1",
            "MODELSHIP_DATA_URI": data.DATA_URI,
            "MODELSHIP_DATA_VERSION": "v1",
            "MODELSHIP_SEED": "42",
            "MODELSHIP_CANDIDATE_URI": self.candidate_uri("a"),
            "MODELSHIP_RESULT_FILE": str(self.result_file),
        }.items():
            monkeypatch.setenv(name, value)
        for name in ("MODELSHIP_ARTIFACT_URI", "MODELSHIP_ARTIFACT_SHA256", "MODELSHIP_BASELINE_URI",
                     "MODELSHIP_BASELINE_VERSION", "MODELSHIP_SERVICE_URL", "MODELSHIP_CANDIDATE_VERSION"):
            monkeypatch.delenv(name, raising=False)

    def candidate_uri(self, name: str) -> str:
        return f"file://{self.tmp}/models/churn/{name}/"

    def __call__(self, main: Main, *args: str, **env: str) -> tuple[int, dict]:
        for name, value in env.items():
            self.monkeypatch.setenv(f"MODELSHIP_{name.upper()}", value)
        if self.result_file.exists():
            self.result_file.unlink()
        code = main(list(args))
        return code, json.loads(self.result_file.read_bytes()) if self.result_file.exists() else {}


@pytest.fixture
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stage:
    return Stage(tmp_path, monkeypatch)
