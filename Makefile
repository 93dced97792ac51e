# `make demo` and `make test` work on a fresh machine: both set up .venv first.
.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	PYOPENGL_PLATFORM=egl .venv/bin/twincell run quickstart --out runs/quickstart

test: setup
	PYOPENGL_PLATFORM=egl .venv/bin/pytest -q

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

bench: setup
	.venv/bin/python benchmarks/bench_pipeline.py
