#!/usr/bin/env bash
# The test suite (README's test command): the Rust tests, then the Python package built with maturin
# into a fresh virtual environment and tested with pytest. Needs cargo and python3 (≥ 3.9) with venv;
# downloads maturin, numpy and pytest from PyPI into the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release
venv="${IDEM_TEST_VENV:-target/test-venv}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet maturin numpy pytest
"$venv/bin/python" -m pip install --quiet .
cd python/tests
"../../$venv/bin/python" -m pytest -q
