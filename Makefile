# Two commands do all the set-up on a fresh machine that has Python >= 3.11, make and a C compiler:
#   make demo   - builds .venv when missing, runs the demo, writes heatmap PNGs and prints where
#   make test   - builds .venv when missing, runs the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= demo_out

.PHONY: demo test bench lint clean

# pip -qq: setuptools' notice about editable installs and warnings about package folders that a
# machine's pip configuration names but lacks are information, not problems (errors still show).
# zennit (test comparisons only) without its torchvision dependency.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet --upgrade pip
	$(PY) -m pip install --quiet --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --quiet --no-deps zennit==0.5.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bowlrp demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check bowlrp nets datasets tests experiments benchmarks

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
