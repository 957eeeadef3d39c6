# occ_ros developer entry points. `make test` and `make demo` bootstrap .venv themselves.
#
# The venv is (re)built when it is missing or when the pinned requirements (or the package's
# setup files) change: the stamp file is named after their hash. When it is up to date,
# `make venv` takes well under a second.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat requirements.lock setup.py setup.cfg package.xml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.occ-ros-env-$(HASH)
PYTEST_ARGS ?=

.PHONY: venv test colcon bench clean-venv

venv: $(STAMP)

$(STAMP): requirements.lock setup.py setup.cfg package.xml
	@if [ -d $(VENV) ] && [ ! -f $(STAMP) ]; then echo "== requirements changed: rebuilding $(VENV)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@$(BIN)/python -c "import torch, rclpy, spconv, nuscenes, rosbags; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest test $(PYTEST_ARGS)

# The same tests through colcon, as a ROS developer runs them (build/, install/, log/ ignored).
colcon: venv
	. $(BIN)/activate && colcon build --symlink-install && colcon test --event-handlers console_direct+ && colcon test-result --verbose

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
