# Quick start: `make demo` (MNIST-1D double descent, about 5 minutes on 2 CPU cores) and `make test`.
PY := .venv/bin/python
OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: venv demo grok test bench clean

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(PY) -m experiments.double_descent --preset mnist1d --out $(OUT)

grok: venv
	$(PY) -m experiments.grokking --preset default --out runs/grok-$(shell date +%Y%m%d-%H%M%S) --report

test: venv
	$(PY) -m ruff check .  # lint (pyproject.toml: [tool.ruff])
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests  # two workers, a test file each

bench: venv
	$(PY) -m benchmarks.members

clean:
	rm -rf .venv runs
