# Quick start: `make demo` (MNIST-1D double descent, 3.5-7 minutes on 2 CPU cores) and `make test`.
PY := .venv/bin/python
OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: venv demo grok test docs bench constraints clean

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(PY) -m experiments.double_descent --preset mnist1d --out $(OUT)

grok: venv
	$(PY) -m experiments.grokking --preset default --out runs/grok-$(shell date +%Y%m%d-%H%M%S) --report

test: venv
	$(PY) -m ruff check .  # lint (pyproject.toml: [tool.ruff])
	$(PY) -m mkdocs build --strict --site-dir .venv/site  # docs/: a broken link or API reference fails
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests  # two workers, a test file each

docs: venv  # the documentation site (docs/ and its API reference) in site/
	$(PY) -m mkdocs build --strict

bench: venv
	$(PY) -m benchmarks.members

constraints:  # the newest versions pyproject.toml allows, recorded in constraints.txt
	CONSTRAINTS= bash scripts/bootstrap.sh
	$(PY) -m pip install --upgrade --upgrade-strategy eager -e '.[dev]' > .venv/install.log 2>&1
	{ head -n 2 constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.tmp && mv constraints.tmp constraints.txt

clean:
	rm -rf .venv runs site
