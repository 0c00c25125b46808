# DeepField: one-command environment, tests, demo, benchmarks and packaging.
# `make setup` is idempotent; every other target calls it first.

SHELL := /bin/bash
PLUGIN := deepfield
VENV := .venv
PY := $(VENV)/bin/python
SYS_PYTHON := /usr/bin/python3
# CPU by default (tensorflow-cpu, or tensorflow where tensorflow-cpu has no wheel: Python 3.13);
# `make setup TF_PACKAGE='tensorflow[and-cuda]==2.21.*'` for NVIDIA GPUs. algorithms/engine_setup.py
# also picks the numpy the system's GDAL bindings were built for (numpy<2 on Debian 12).
TF_PACKAGE ?= $(shell $(SYS_PYTHON) algorithms/engine_setup.py tensorflow)
APT_PACKAGES := qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv xvfb zip
# A folder that holds the plugin as deepfield/ (a link to this checkout), for QGIS_PLUGINPATH.
BUILD := .build
PLUGINPATH := $(abspath $(BUILD)/plugins)
STAMP := $(VENV)/.deepfield-setup-$(shell echo "$(TF_PACKAGE)" | cat - requirements.txt requirements-dev.txt | md5sum | cut -c1-8)

export QT_QPA_PLATFORM ?= offscreen
export QGIS_PLUGINPATH := $(PLUGINPATH)
export DEEPFIELD_SHARED_DATA ?= $(abspath ../shared/data)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup apt lint test test-slow test-qgis340 demo demo-quick bench screenshot package clean

setup: $(STAMP) $(PLUGINPATH)/$(PLUGIN)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "Missing Debian packages:$$missing"; \
	    echo "Run: sudo apt-get update && sudo apt-get install -y$$missing   (then run make again)"; exit 1; \
	  fi; \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): requirements.txt requirements-dev.txt | apt
	@test -x $(PY) || $(SYS_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TF_PACKAGE)" "$$($(SYS_PYTHON) algorithms/engine_setup.py numpy)" \
	  -r requirements.txt -r requirements-dev.txt
	@rm -f $(VENV)/.deepfield-setup-*; touch $@

$(PLUGINPATH)/$(PLUGIN):
	@mkdir -p $(PLUGINPATH) && ln -sfn $(CURDIR) $@

# Engine tests and QGIS tests run in two processes: TensorFlow and PyQGIS never share one.
test: lint
	PYTHONPATH=$(PLUGINPATH) $(PY) -m pytest tests/engine -q $(PYTEST_ARGS)
	PYTHONPATH=$(PLUGINPATH) $(PY) -m pytest tests/qgis -q $(PYTEST_ARGS)

# The generated-network proof of exact serving with many architectures (make test tries a few).
test-slow: lint
	DEEPFIELD_SLOW=1 PYTHONPATH=$(PLUGINPATH) $(PY) -m pytest tests/engine/test_generated_networks.py -q $(PYTEST_ARGS)

# The suite on Debian 13 (QGIS 3.40 LTR, Python 3.13) in a debootstrap chroot cached under .build/
# (as root; see scripts/test_qgis340.sh). CI runs `make test` on Debian 12 (QGIS 3.22).
test-qgis340:
	scripts/test_qgis340.sh

# The main job end to end on real data, through qgis_process.bin (see scripts/demo.py);
# `make demo APP=<application>` runs another application's demo (scripts/demo.py: APPS).
demo: setup
	$(PY) scripts/demo.py $(if $(APP),--app $(APP) --out $(BUILD)/demo-$(APP))

demo-quick: setup
	$(PY) scripts/demo.py --quick --out $(BUILD)/demo-quick

lint: setup
	$(VENV)/bin/ruff check .

# Re-take docs/screenshot.png (QGIS desktop under Xvfb) after the checks of test_desktop pass.
screenshot: setup
	DEEPFIELD_UPDATE_SCREENSHOT=1 PYTHONPATH=$(PLUGINPATH) $(PY) -m pytest tests/qgis/test_desktop.py -q

bench: setup
	PYTHONPATH=$(PLUGINPATH) $(PY) bench/run.py $(BENCH)

package:
	@rm -rf $(BUILD)/package && mkdir -p $(BUILD)/package/$(PLUGIN)
	git ls-files -z --cached --others --exclude-standard \
	  | grep -zvE '^(tests|bench|scripts|docs|\.ci|\.build)/|^\.git|^pytest\.ini$$|^requirements-dev\.txt$$' \
	  | xargs -0 -I{} cp --parents {} $(BUILD)/package/$(PLUGIN)/
	cd $(BUILD)/package && rm -f ../$(PLUGIN).zip && zip -qr ../$(PLUGIN).zip $(PLUGIN)
	@echo "Built $(BUILD)/$(PLUGIN).zip"

clean:
	rm -rf $(BUILD) .pytest_cache bench/results/*.json
