# Two entry points: `make demo` and `make test`. Both create .venv if missing and install once;
# the install is redone only when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgekit-installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

# Debian packages some tests use: an OpenSSH server (ssh benchmark targets, on loopback), libusb
# (tflite-support's metadata reader, the independent check of Android metadata) and Fashion-MNIST
# (the real-data tests and benchmarks/fashion_mnist.py) and Chromium (the HTML report opened in a
# real browser, tests/test_report_browser.py). Installed when running as root with apt; otherwise
# those tests skip and say why.
SYSTEM_PKGS := openssh-server openssh-client libusb-1.0-0 dataset-fashion-mnist chromium

.PHONY: install demo test test-distributed lint format clean system-deps emulators

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/edgekit compress --recipe distill --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

system-deps:
	@command -v dpkg >/dev/null || exit 0; \
	missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	    || echo "note: could not install$$missing; the tests that need them are skipped"; \
	else echo "note: system packages missing:$$missing; the tests that need them are skipped"; fi

# The emulated arm64 targets (qemu-user, an arm64 Python sysroot, aarch64 LiteRT), cached outside
# the repository; idempotent (a second run returns at once). Without root and without qemu-user the
# emulation tests skip and say why.
emulators: install
	@if [ "$$(id -u)" = 0 ] || command -v qemu-aarch64 >/dev/null; then \
	  $(VENV)/bin/edgekit devices setup; \
	else echo "note: qemu-user missing and not root; the emulated-target tests are skipped"; fi

test: lint system-deps emulators
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The tf.distribute tests that train under MirroredStrategy (2 logical CPUs): minutes, so not in
# `make test`.
test-distributed: install
	EDGEKIT_DISTRIBUTED_TESTS=1 $(PY) -m pytest -q tests/test_distribute.py tests/test_multi_worker.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
