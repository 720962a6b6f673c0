# Two commands on a fresh machine:  make demo  (train + export on a built-in dataset)
#                                   make test  (the test suite CI runs)
# Each creates the virtualenv it needs in .venv (override with VENV=...).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: demo test docs venv clean-venv

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: VGG16 with the offline HED weights, ELPV solar cells (defective or not),
# a small budget that runs in a few minutes on 2 CPU cores; prints test accuracy, exports.
demo: $(STAMP)
	$(BIN)/keras-transfer train --dataset elpv --backbone vgg16 --weights hed \
		--input-size 160 --removed 3 --limit-per-class 400 --precision auto \
		--epochs 4 --fine-tune-epochs 4 --out $(DEMO_OUT) --resume

# the import layering (setup.cfg's [importlinter], docs/design.md), the docs (strict: a broken
# link or a renamed API name fails), then the suite
test: $(STAMP)
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site
	$(BIN)/python -m pytest

# the documentation site in site/ (open site/index.html)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean-venv:
	rm -rf $(VENV)
