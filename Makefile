# Two commands on a fresh Debian/Ubuntu machine:
#   make run    install everything, fill data/, then `dvc repro`: the default study and its report
#   make test   install everything, then run lint and the test suite
# More: make train ARGS="optimizer=adagrad" (one run), make study / study-smoke (a study and its report).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; users with a GPU set TORCH="torch==<version>" with their CUDA build's index.
TORCH ?= torch==2.13.0

.PHONY: run train test data setup study study-smoke browser

# The pipeline's commands call `python`: the venv's.
run: setup data
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro $(ARGS)

train: setup data
	$(PY) train.py $(ARGS)

test: setup data browser
	$(PY) -m ruff check .
	$(PY) -m pytest $(ARGS)

# A named study (conf/study/<name>.yaml) from scratch, then its report:
#   make study                 the tuned default study: results/default/ and results/default/report/
#   make study STUDY=e4        any other study; ARGS go to train.py, e.g. ARGS="launcher=joblib"
#   make study-smoke           the quick smoke study (about two minutes, offline)
STUDY ?= default
study: setup data
	rm -rf results/$(STUDY)
	$(PY) -m optstudy.study run study=$(STUDY) $(ARGS)

study-smoke:
	$(MAKE) study STUDY=smoke

# Fashion-MNIST from the Debian/Ubuntu package, when apt is there (needs root or sudo), then
# copied into data/fashion_mnist/ (the version data.dvc records; a verified download otherwise).
data: setup
	@if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "note: could not install dataset-fashion-mnist; train.py will try a verified download"; \
	else echo "note: no apt-get; put Fashion-MNIST in data/fashion_mnist/ or let train.py download it"; fi
	@[ -e data/fashion_mnist/train-images-idx3-ubyte ] || $(PY) -m optstudy.data.fetch data=fashion_mnist

# Headless Chromium for the test that opens report.html as a reader would (Debian's package,
# when apt is there); without it that test is skipped and says why.
browser:
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium) \
	  || echo "note: could not install chromium; the report's browser test will be skipped"; \
	else echo "note: no apt-get; install chromium to run the report's browser test"; fi

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@
