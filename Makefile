# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Pinned so that pip takes the CPU build that this kind of machine carries instead of pulling
# the newest CUDA build; override with `make TORCH=torch` (or any spec) elsewhere.
TORCH  ?= torch==2.13.0
MODEL  ?= all-MiniLM-L6-v2
export HF_HUB_OFFLINE = 1

.PHONY: demo test lint bench bench-rivals weights install fixture clean notebook train train-stsb train-quick bench-multitask demo-multitask app pretrain-tiny

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,train]"
	touch $@

install: $(VENV)/.installed

weights/$(MODEL)/model.safetensors: | $(VENV)/.installed
	$(PY) -m minibert download $(MODEL)

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
	$(PY) -m ruff check minibert scripts tests experiments docs

bench: install weights
	$(PY) scripts/bench_encode.py

# The same benchmark with ONNX Runtime and OpenVINO, in a venv of their own (.venv-bench).
.venv-bench/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip
	.venv-bench/bin/python -m pip install --quiet "$(TORCH)"
	.venv-bench/bin/python -m pip install --quiet -e ".[bench]"
	touch $@

bench-rivals: .venv-bench/.installed weights
	.venv-bench/bin/python scripts/bench_encode.py

# The walkthrough notebook, run top to bottom from its source; the outputs and figures are kept.
notebook: install weights
	$(PY) scripts/notebook.py --source docs/walkthrough.py --output docs/walkthrough.ipynb

fixture: install weights
	$(PY) scripts/make_reference_fixture.py

clean:
	rm -rf $(VENV) .venv-bench .pytest_cache .ruff_cache .hypothesis *.egg-info

# Training. Data files are relative to data_dir: ../shared/data, or $MINIBERT_DATA, or --set data_dir=DIR.
train: install weights
	$(PY) scripts/train.py --config scripts/configs/multitask.toml

train-stsb: install weights
	$(PY) scripts/train.py --config scripts/configs/stsb.toml

# BERT's pretraining in small: a 4-layer BERT learns from nothing by masked-language modelling on the sentences
# of ../shared/data's training splits, minutes on 2 cores; the loss curve is runs/pretrain-tiny/curves.png, and
# the baseline it must beat (each token predicted by its frequency) is printed beside its own figures.
pretrain-tiny: install weights
	$(PY) scripts/make_pretraining_data.py runs/pretrain-data
	$(PY) scripts/train.py --config scripts/configs/pretrain_tiny.toml
	$(PY) scripts/mlm_baseline.py --config scripts/configs/pretrain_tiny.toml

# Every task type (seven) on synthetic data made on the spot (no data folder needed), in minutes on a CPU.
# ARGS go to the training script: make train-quick ARGS="--set model=weights/my-distilbert"
train-quick: install weights
	$(PY) scripts/make_quick_data.py runs/quick-data
	$(PY) scripts/train.py --config scripts/configs/quick.toml $(ARGS)

runs/quick/best/tasks.json:
	$(MAKE) train-quick

bench-multitask: install weights
	$(PY) scripts/bench_multitask.py --config scripts/configs/multitask.toml

# Every task's prediction for a few sentences, from the model `make train` saved (else `make train-quick`'s).
MULTITASK_MODEL ?= $(if $(wildcard runs/multitask/best/tasks.json),runs/multitask/best,runs/quick/best)
demo-multitask: install weights $(MULTITASK_MODEL)/tasks.json
	$(PY) -m minibert predict --model $(MULTITASK_MODEL) \
	    "Angela Merkel met Emmanuel Macron in Paris on Monday." \
	    "The Lakers beat the Celtics 102-99 last night." \
	    "Apple shares fell 3% after the iPhone launch." \
	    "What a wonderful, heartfelt film."
	$(PY) -m minibert predict --model $(MULTITASK_MODEL) --pairs \
	    "A man is playing a guitar on stage." "A musician is performing." \
	    "A man is playing a guitar on stage." "The stage is empty."

# The web app on http://localhost:8501: similarity, search, and (given a trained folder) every task's prediction.
app: install weights
	$(PY) -m streamlit run scripts/app.py --server.headless true --browser.gatherUsageStats false \
	    --client.toolbarMode viewer -- --model $(MODEL) \
	    $(if $(wildcard $(MULTITASK_MODEL)/tasks.json),--multitask $(MULTITASK_MODEL))

# The README's screenshot of the app, taken by its browser test.
docs/app.png: scripts/app.py tests/test_app.py | install weights
	MINIBERT_APP_SCREENSHOT=$@ $(PY) -m pytest -q tests/test_app.py -k search_shows
