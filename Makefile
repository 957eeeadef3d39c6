# occ_ros developer entry points. `make test` and `make demo` bootstrap .venv themselves.
#
# .venv is rebuilt from scratch when it is missing or when requirements.lock changes (the
# dependency stamp is named after its hash); the package itself is re-installed (editable)
# when setup.py, setup.cfg or package.xml change. The ROS interfaces (interfaces/: occ_ros_msgs
# from msg/, and tf2_msgs, which has no wheel) are generated with the rosidl tool chain of the
# venv's Jazzy wheels and installed into .venv itself (see README, "Interfaces"; a .pth file
# appends .venv to AMENT_PREFIX_PATH for the ament index) when the venv
# is rebuilt or when their sources (.msg files, CMakeLists, package.xml) change: the stamp is
# named after their hash. When all is up to date, `make venv` takes well under a second.
#
# PYTHON picks the interpreter (make venv PYTHON=python3.12); ROS=system builds the venv for a
# sourced system ROS 2 install (source /opt/ros/jazzy/setup.bash first): --system-site-packages,
# ROS's own rclpy, messages, rosidl and colcon, and no ros-*/colcon wheels from the lock. A venv
# made with another interpreter or ROS mode is rebuilt (the stamp names both unless they are the
# defaults, Python 3.11 and the wheels).

PYTHON ?= python3.11
ROS ?= wheels
VENV := .venv
BIN := $(VENV)/bin
PY_VER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
VENV_TAG := $(if $(filter 3.11-wheels,$(PY_VER)-$(ROS)),,-py$(PY_VER)-$(ROS))
DEPS_HASH := $(shell sha256sum requirements.lock | cut -c1-16)$(VENV_TAG)
PKG_HASH := $(shell cat setup.py setup.cfg package.xml | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.deps-$(DEPS_HASH)
PKG_STAMP := $(VENV)/.pkg-$(DEPS_HASH)-$(PKG_HASH)
IFACE_SOURCES := $(sort $(wildcard msg/*.msg interfaces/*/msg/*.msg interfaces/*/CMakeLists.txt \
	interfaces/*/package.xml interfaces/cmake/*.cmake interfaces/build_into_prefix.sh interfaces/ament_prefix.pth))
IFACE_HASH := $(shell cat $(IFACE_SOURCES) | sha256sum | cut -c1-16)
IFACE_STAMP := $(VENV)/.ifaces-$(DEPS_HASH)-$(IFACE_HASH)
# ROS=system: what the lock pins for the ROS side (the ros-* wheels, colcon and the rosidl tool
# chain's Python packages) comes from the system ROS install instead.
ROS_PINS := ^(ros-|colcon-|catkin-pkg==|empy==|lark-parser==)
PYTEST_ARGS ?=

.PHONY: venv test demo train-demo benchmark docs-renders colcon bench clean-venv

venv: $(PKG_STAMP) $(IFACE_STAMP)

$(DEPS_STAMP): requirements.lock
	@test -n "$(PY_VER)" || { echo "make: PYTHON=$(PYTHON): no such Python interpreter (e.g. make venv PYTHON=python3.12)"; exit 2; }
	@case "$(ROS)" in wheels|system) ;; *) echo "make: ROS=$(ROS): expected wheels or system"; exit 2;; esac
	@if [ "$(ROS)" = system ] && [ -z "$$ROS_DISTRO" ]; then echo "make: ROS=system: source /opt/ros/<distro>/setup.bash first"; exit 2; fi
	@if [ -d $(VENV) ]; then echo "== requirements.lock, PYTHON or ROS changed: rebuilding $(VENV)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(if $(filter system,$(ROS)),--system-site-packages) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
ifeq ($(ROS),system)
	grep -v -E '$(ROS_PINS)' requirements.lock > $(VENV)/requirements-system-ros.txt
	$(BIN)/python -m pip install --quiet -r $(VENV)/requirements-system-ros.txt
else
	$(BIN)/python -m pip install --quiet -r requirements.lock
endif
	@$(BIN)/python -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0', 'torch must be 2.13.0, got ' + torch.__version__"
	touch $(DEPS_STAMP)

$(PKG_STAMP): $(DEPS_STAMP) setup.py setup.cfg package.xml
	rm -f $(VENV)/.pkg-*
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(PKG_STAMP)

# tf2_msgs is generated unless one outside .venv is importable (a full ROS 2 install has its own).
$(IFACE_STAMP): $(DEPS_STAMP) $(IFACE_SOURCES)
	rm -f $(VENV)/.ifaces-*
	mkdir -p $(VENV)/interfaces-build
	interfaces/build_into_prefix.sh $(VENV) $(VENV)/interfaces-build interfaces/occ_ros_msgs \
		$$($(BIN)/python -c "import sys, tf2_msgs; sys.exit(tf2_msgs.__file__.startswith(sys.prefix))" 2>/dev/null || echo interfaces/tf2_msgs)
	cp interfaces/ament_prefix.pth "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/occ_ros_ament_prefix.pth"
	$(BIN)/python -c "from occ_ros_msgs.msg import SemanticOccupancyGrid; from tf2_msgs.msg import TFMessage; \
		from ament_index_python.packages import get_package_share_directory as share; share('occ_ros_msgs')"
	touch $(IFACE_STAMP)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The main job on the embedded default: generate the synthetic world (once, into data/), predict
# the validation scene with the shipped model and the per-voxel prior, evaluate (mIoU, IoU,
# RayIoU), convert it to a bag and score the ROS node on its playback, render PNGs.
demo: venv
	$(BIN)/python -m occ_core.demo --dataroot data/synthetic --out work_dirs/demo

# The shipped fusion_demo.pt: the benchmark's preset worlds (generated once into data/bench), then
# occ-train with the recipe of config/models/fusion.yaml; copy work_dirs/fusion_demo/model.pt over
# config/models/fusion_demo.pt to ship it.
train-demo: venv
	@test -d data/bench/train/v1.0-mini || $(BIN)/occ-synth --preset bench-train --out data/bench/train --quiet
	@test -d data/bench/heldout/v1.0-mini || $(BIN)/occ-synth --preset bench-heldout --out data/bench/heldout --quiet
	$(BIN)/occ-train --config config/models/fusion.yaml --dataroot data/bench/train --val-dataroot data/bench/heldout \
		--max-val-samples 40 --work-dir work_dirs/fusion_demo --threads 2

# The learning benchmark (issue 16; BENCHMARKS.md "Learning benchmark"): configs x 3 seeds on bench-train,
# scored on bench-heldout. BENCH_CONFIGS / BENCH_STEPS / BENCH_SEEDS pick the table; BENCH_ARGS adds
# e.g. recipe ablations: BENCH_ARGS='--variant no_ema=train.ema_decay:0'.
BENCH_CONFIGS ?= fusion,lidar
BENCH_STEPS ?= 300
BENCH_SEEDS ?= 0,1,2
BENCH_ARGS ?=
benchmark: venv
	$(BIN)/python bench/learning.py --configs $(BENCH_CONFIGS) --steps $(BENCH_STEPS) --seeds $(BENCH_SEEDS) \
		--threads 2 $(BENCH_ARGS)

# Regenerate docs/demo_compare.png (README): the shipped model's offline prediction of keyframe
# DOCS_KEYFRAME of the held-out scene-0005 beside its ground truth, as a 256-colour PNG (< 400 KB).
# Run it after replacing config/models/fusion_demo.pt.
DOCS_KEYFRAME ?= 04
docs-renders: venv
	@test -d data/synthetic/v1.0-mini || $(BIN)/python -c "from occ_core.demo import DEFAULT_WORLD; from occ_core.data.synthetic import generate; generate(DEFAULT_WORLD, 'data/synthetic')"
	$(BIN)/python -m occ_core.training.predict --config config/models/fusion.yaml --checkpoint config/models/fusion_demo.pt \
		--dataroot data/synthetic --split val --out work_dirs/docs_renders/pred_fusion --overwrite
	$(BIN)/python -m occ_core.viz.cli --compare work_dirs/docs_renders/pred_fusion --dataroot data/synthetic \
		--scenes scene-0005 --model-name "fusion_demo.pt (fusion.yaml)" --colors 256 -o work_dirs/docs_renders
	cp work_dirs/docs_renders/scene-0005_$(DOCS_KEYFRAME)_*_compare.png docs/demo_compare.png

# The same tests through colcon, as a ROS developer runs them (build/, install/, log/ are ignored).
colcon: venv
	. $(BIN)/activate && colcon build --symlink-install && colcon test --event-handlers console_direct+ && colcon test-result --verbose

bench: venv
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
