# hf_unlearnable: `make demo` sets everything up and runs the demo; `make test` runs the tests.
# Every target that needs Python depends on `venv`, which is a no-op once .venv matches pyproject.toml.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned and installed FIRST: this machine keeps a CPU build of exactly this version on disk
# (/opt/wheels, pip's find-links); letting pip pick torch itself pulls the newest CUDA build (several GB).
TORCH  ?= torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels/torch-*.whl),--find-links /opt/wheels)
PIP    := $(BIN)/python -m pip --disable-pip-version-check
PYTEST_ARGS ?=
DEMO_ARGS   ?=
BENCH_ARGS  ?=
SPACE_ARGS  ?=

.PHONY: all venv demo test test-slow fuzz bench space clean distclean help

all: demo

help:
	@echo "make venv       create .venv ($(TORCH) CPU first, then the package editable with test+bench extras)"
	@echo "make demo       protect the bundled CIFAR-10 slice 3 ways, train victims, print one table (~10 min CPU)"
	@echo "make test       the default test suite (not slow; includes the real-CIFAR-10 end-to-end test)"
	@echo "make test-slow  only the tests marked slow"
	@echo "make fuzz       the fuzz suite with many more examples, and the fault tests with more kills (~15 min)"
	@echo "make bench      benchmarks/efficacy.py (results in benchmarks/results/)"
	@echo "make space      run the Gradio Space locally (hub_scripts/space/app.py; SPACE_ARGS='--noise DIR --port N')"
	@echo "make clean      remove build/test leftovers and runs/demo (keeps .venv); distclean also removes .venv"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(FIND_LINKS) "$(TORCH)"
	$(PIP) install $(FIND_LINKS) -e '.[test,bench]'
	@touch $(STAMP)

demo: venv
	$(BIN)/hf-unlearnable demo $(DEMO_ARGS)

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

fuzz: venv
	HF_UNLEARNABLE_FUZZ=slow HF_UNLEARNABLE_FAULT_KILLS=20 HF_UNLEARNABLE_FAULT_SWAPS=300 $(BIN)/python -m pytest -q tests/test_fuzz.py \
		tests/test_faults.py tests/test_atomic.py $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/efficacy.py $(BENCH_ARGS)

space: venv
	$(BIN)/python hub_scripts/space/app.py $(SPACE_ARGS)

clean:
	rm -rf build dist .pytest_cache runs/demo
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
