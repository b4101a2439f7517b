# Two commands do all set-up on a fresh Linux machine:
#   make demo   # venv + install, then segment the two bundled demo samples with the bundled model → out/demo/
#   make test   # venv + install, then the test suite (fast set; `make test-slow` for the long ones)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned so pip takes the CPU build where the machine provides it; see README for GPU installs. The rest
# is installed with that torch (and torchvision, if any) held (torch-pin.txt), so no dependency swaps the build.
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
SHARED ?= ../shared
SAMPLE := LungTumorSeg/Resources/Sample

.PHONY: setup demo test test-slow lint format api-check bench bench-train bundle clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	$(PY) -m pip freeze | grep -E '^(torch|torchvision)==' > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet -e ".[dev]" -c $(VENV)/torch-pin.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/lungtumorseg segment $(SAMPLE)/demo_nodule.nii.gz $(SAMPLE)/demo_ct.nii.gz -o out/demo --overwrite

# Rebuild the bundled model from ../shared/data (hours on CPU; see the model card)
bundle: setup
	$(PY) scripts/build_bundle.py

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

api-check:
	$(PYTHON) $(SHARED)/tools/slicer_api_check.py LungTumorSeg LungTumorSegTraining

bench: setup
	$(PY) Testing/benchmarks/bench_inference.py
	$(PY) Testing/benchmarks/bench_measure.py

bench-train: setup
	$(PY) Testing/benchmarks/bench_training.py

clean:
	rm -rf out .pytest_cache
