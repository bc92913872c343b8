# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Pinned so that pip takes the CPU build that this kind of machine carries instead of pulling
# the newest CUDA build; override with `make TORCH=torch` (or any spec) elsewhere.
TORCH  ?= torch==2.13.0
MODEL  ?= all-MiniLM-L6-v2
export HF_HUB_OFFLINE = 1

.PHONY: demo test lint bench weights install fixture clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

weights/$(MODEL)/model.safetensors: | $(VENV)/.installed
	$(PY) scripts/get_weights.py $(MODEL)

weights: weights/$(MODEL)/model.safetensors

demo: install weights
	$(PY) -m minibert similarity --model $(MODEL) \
	    "A man is playing a guitar." \
	    "Someone is playing an instrument." \
	    "A chef is cooking pasta in the kitchen." \
	    "The stock market fell sharply today."

test: install weights
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check minibert scripts tests

bench: install weights
	$(PY) scripts/bench_encode.py

fixture: install weights
	$(PY) scripts/make_reference_fixture.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
