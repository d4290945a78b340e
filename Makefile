# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench image image-tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# One stamp per extra: reinstalled when pyproject.toml changes.
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Flags for the demo in ARGS: `make demo ARGS="--ports 18000"` (see `python -m demo --help`).
demo: $(VENV)/.demo
	$(BIN)/python -m demo $(ARGS)

test: $(VENV)/.dev
	$(BIN)/python -m pytest

# Flags for the bench go after `--` or in ARGS: `make bench -- --peer ../shared/peers/go-control-plane/gocp`,
# `make bench ARGS="--nodes 1000 --pods 10000"`.
ifeq (bench,$(firstword $(MAKECMDGOALS)))
BENCH_FLAGS := $(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS))
.PHONY: $(BENCH_FLAGS)
$(eval $(BENCH_FLAGS):;@:)
endif

bench: $(VENV)/.dev
	$(BIN)/python -m bench.fanout $(BENCH_FLAGS) $(ARGS)

# The container image (Containerfile), with buildah or docker. BASE=<image> picks another base; on a machine that
# reaches no image registry, IMAGE_FLAGS=--debian-base builds the base from Debian's packages (needs buildah).
image:
	scripts/image.sh $(IMAGE_FLAGS)

# buildah and mmdebstrap from Debian's packages (as root), for `make image` and the image test of `make test`.
image-tools:
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null; }

clean:
	rm -rf $(VENV) build src/*.egg-info
