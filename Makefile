# mmkd_ros developer commands. Every target builds the project virtual environment first,
# from the pinned requirements.txt, so a fresh clone needs nothing installed by hand.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs/demo

.PHONY: venv demo test test-fast colcon bench clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	# The project itself, editable: training/ and bench/ scripts import mmkd_ros from this tree.
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

## The main job on the embedded default: simulated drives -> pairs -> teacher, baseline, student -> test drive -> nodes live.
demo: $(STAMP)
	$(BIN)/python training/demo.py --out $(RUNS)

## The whole test suite (real rclpy/DDS, real rosbags, real torch).
test: $(STAMP)
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q test

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" test

## colcon build into build/ and install/ (what a ROS 2 user does).
colcon: $(STAMP)
	source $(BIN)/activate && colcon build --base-paths . --build-base build --install-base install

## The benchmarks that need no research data, one after another (each rewrites its BENCHMARKS.md
## section; about an hour on 2 cores). The real-data studies: bench/bench_realdata.py --help.
bench: $(STAMP)
	$(BIN)/python bench/bench_extract.py
	$(BIN)/python bench/bench_nodes.py
	$(BIN)/python bench/bench_modality_gap.py
	$(BIN)/python bench/bench_distill.py
	$(BIN)/python bench/bench_demo.py

clean:
	rm -rf build install log runs data .pytest_cache
