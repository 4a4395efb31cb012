"""Shared fixtures of the legion_rs tests: the committed evaluator and raster fixtures
(made by scripts/fixtures/eval.py and scripts/fixtures/raster.py) and the reference Python
evaluator scripts/eval_reference.py, imported as a module."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVAL_FIXTURE = ROOT / "crates" / "legion-eval" / "tests" / "fixtures" / "eval"
RASTER_FIXTURE = ROOT / "crates" / "legion-data" / "tests" / "fixtures" / "raster" / "raster_cases.json"
REFERENCE_SCRIPT = ROOT / "scripts" / "eval_reference.py"

# Every number is compared to the reference implementations to this absolute tolerance.
TOL = 1e-9


@pytest.fixture(scope="session")
def reference():
    """scripts/eval_reference.py as a module (numpy + cv2 + rouge-score)."""
    spec = importlib.util.spec_from_file_location("eval_reference", REFERENCE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def raster_cases():
    with open(RASTER_FIXTURE) as f:
        return json.load(f)


def assert_close(ours, theirs, what):
    assert abs(ours - theirs) <= TOL, f"{what}: ours {ours!r} vs reference {theirs!r}"
