# Two commands set up a fresh clone: `make demo` and `make test`.
# `make test-vision` builds the second tested environment (torchvision, timm) and runs the tests marked `vision`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VISION_VENV ?= .venv-vision
VISION_BIN := $(VISION_VENV)/bin

.PHONY: demo test install install-vision test-vision clean

$(BIN)/pamc: pyproject.toml requirements-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-lock.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

install: $(BIN)/pamc

$(VISION_BIN)/pamc: pyproject.toml requirements-vision.txt
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_BIN)/pip install -q -r requirements-vision.txt
	$(VISION_BIN)/pip install -q --no-deps -e .
	@touch $@

install-vision: $(VISION_BIN)/pamc

demo: install
	$(BIN)/pamc demo

test: install
	$(BIN)/python -m pytest -q

test-vision: install-vision
	$(VISION_BIN)/python -m pytest -q -m vision

clean:
	rm -rf $(VENV) $(VISION_VENV) runs demo-output
