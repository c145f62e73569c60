# The two commands of the quick start: `make demo` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv
TM := $(UV) run --frozen tminus
QS := examples/quickstart/plan.yaml
export QUICKSTART_TOKEN ?= demo-token-7f3a91

.PHONY: demo demo-fail deps test lint typecheck pytest check-examples clean

deps:
	@bash scripts/bootstrap.sh

## The main job on embedded defaults: check, render and run the quickstart for real.
demo: deps
	$(TM) check $(QS)
	@mkdir -p out
	$(TM) render $(QS) --format md -o out/quickstart-runbook.md
	$(TM) render $(QS) --format html -o out/quickstart-runbook.html
	$(TM) run $(QS) --dry-run --confirm "Release notes reviewed"
	$(TM) run $(QS) --confirm "Release notes reviewed" || test $$? -eq 3
	$(TM) status

## The same plan made to fail in its downtime phase: watch the automatic rollback.
demo-fail: deps
	$(TM) run $(QS) --var fail=yes --confirm "Release notes reviewed" || test $$? -eq 1
	$(TM) status

test: deps
	@bash scripts/test-services.sh
	$(UV) run --frozen ruff check src tests bench
	$(UV) run --frozen ruff format --check src tests bench
	$(UV) run --frozen mypy src
	$(UV) run --frozen pytest -n auto --dist worksteal

check-examples: deps
	$(TM) check examples/quickstart/*.yaml examples/seeds/*.yaml

clean:
	rm -rf out .tminus .pytest_cache .mypy_cache .ruff_cache
