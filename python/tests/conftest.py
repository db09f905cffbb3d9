"""Shared fixtures of the Python package's tests: paths, the CLI binary, tiny training budgets."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "reference"

# a training budget of seconds (any target): 2 epochs of 5 steps, small batches and K
TINY = {
    "epochs": 2,
    "steps_per_epoch": 5,
    "batch_size": 64,
    "num_mc_samples": 32,
    "samples_per_epoch": 64,
    "num_init_samples": 64,
    "buffer_capacity": 256,
    "eval_samples": 64,
    "eval_every": 1,
    "final_sde_steps": 20,
    "sde.steps": 10,
}


@pytest.fixture(scope="session")
def idem_cli() -> Path:
    """The `idem` command-line binary of this checkout (built with cargo if it is missing)."""
    exe = Path(os.environ.get("IDEM_BIN", REPO / "target" / "release" / "idem"))
    if not exe.exists():
        subprocess.run(
            ["cargo", "build", "--release", "--bin", "idem"], cwd=REPO, check=True
        )
    assert exe.exists(), f"no idem binary at {exe}"
    return exe
