# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Pinned so that pip takes the CPU build that this kind of machine carries instead of pulling
# the newest CUDA build; override with `make TORCH=torch` (or any spec) elsewhere.
TORCH  ?= torch==2.13.0
MODEL  ?= all-MiniLM-L6-v2
export HF_HUB_OFFLINE = 1

.PHONY: demo test lint bench weights install fixture clean train train-stsb bench-stsb augsbert bench-multitask demo-multitask stsb-reference

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,train]"
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

# Training (issue: multi-task training). Data defaults to ../shared/data; set MINIBERT_DATA to move it.
train: install weights
	$(PY) scripts/train.py --config scripts/configs/multitask.toml

train-stsb: install weights
	$(PY) scripts/train.py --config scripts/configs/stsb.toml

# Five seeds of train-stsb, a greedy model soup chosen on dev, then test (hours: a 6-epoch SAM run took 80 min).
bench-stsb: install weights
	$(PY) scripts/bench_stsb.py --config scripts/configs/stsb.toml

# AugSBERT on STS-B, after bench-stsb: a cross-encoder; silver pairs scored by it and the five seeds
# (their average, whose dev Spearman it prints); then the bi-encoder on gold + silver (about 1 hour).
DATA ?= $(or $(MINIBERT_DATA),../shared/data)
augsbert: install weights
	$(PY) scripts/train.py --config scripts/configs/stsb_cross.toml --set tasks.cross.test=null
	$(PY) scripts/silver.py --teachers runs/stsb-seeds/seed*/best runs/stsb-cross/best \
	    --train $(DATA)/stsb/train.tsv --dev $(DATA)/stsb/dev.tsv --out runs/stsb-silver.tsv
	$(PY) scripts/train.py --config scripts/configs/stsb_augsbert.toml --set tasks.sts.test=null

# The same STS-B recipe through sentence-transformers' own trainer (a reference; about 15 minutes).
stsb-reference: install weights
	$(PY) -m pip install --quiet -e ".[reference-train]"
	$(PY) scripts/stsb_reference.py

bench-multitask: install weights
	$(PY) scripts/bench_multitask.py --config scripts/configs/multitask.toml

# Every task's prediction for a few sentences, from the model `make train` saved.
demo-multitask: install
	$(PY) -m minibert predict --model runs/multitask/best \
	    "Angela Merkel met Emmanuel Macron in Paris on Monday." \
	    "The Lakers beat the Celtics 102-99 last night." \
	    "Apple shares fell 3% after the iPhone launch." \
	    "What a wonderful, heartfelt film."
	$(PY) -m minibert predict --model runs/multitask/best --pairs \
	    "A man is playing a guitar on stage." "A musician is performing." \
	    "A man is playing a guitar on stage." "The stage is empty."
