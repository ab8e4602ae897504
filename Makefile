# crystalbench: `make demo` and `make test` set everything up first (Debian packages
# through apt-get, Python packages in .venv), so both work on a fresh Debian 12 machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CB     := $(BIN)/crystalbench
CONFIG ?= configs/digits.yaml
BUILD  ?= build
# Debian packages the tool runs: ngspice (run in batch mode), Icarus Verilog,
# Yosys, nextpnr for iCE40 with icestorm's packer, openFPGALoader for flashing, and gcc
# (with binutils' `size`) for the C backend.
APT_PACKAGES := ngspice iverilog yosys nextpnr-ice40 fpga-icestorm openfpgaloader gcc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SYNTH := --set rtl.shapes=serial --set rtl.digital_shapes=none --set rtl.large_part=none
BENCH_CONFIGS := configs/digits.yaml configs/digits_source_scale.yaml configs/mnist1d.yaml

.PHONY: setup apt demo test lint mutate train quantize synth sim sim-analog sim-hybrid sweep manufacture bench bench-infer bitstream flash report clean help
.DEFAULT_GOAL := help

help:
	@echo "make demo    set up, train the default crystal on digits, its analog core in ngspice, the frontier's gates, the hybrid end to end"
	@echo "make test    set up, lint (ruff), run the test suite (real tools, no skips)"
	@echo "make train   CONFIG=configs/<name>.yaml"
	@echo "make quantize CONFIG=...: fixed-point formats + golden model -> $(BUILD)/<exp>/fixed/"
	@echo "make synth   CONFIG=...: RTL, Yosys gates + iCE40/nextpnr -> $(BUILD)/<exp>/synth/"
	@echo "make sim     CONFIG=...: cocotb/Icarus RTL + gate-level regression, latency, energy -> $(BUILD)/<exp>/sim/ (WAVES=1: VCDs)"
	@echo "make sim-analog  CONFIG=...: frozen core as op-amp circuits in ngspice -> $(BUILD)/<exp>/analog/"
	@echo "make manufacture CONFIG=...: the analog core as a board: KiCad netlist + ERC, BOM CSV with part numbers and cost, netlist re-simulated in ngspice -> $(BUILD)/<exp>/manufacture/"
	@echo "make sim-hybrid  CONFIG=...: ngspice core -> ADC -> frontier gate netlist, Monte Carlo, system energy -> $(BUILD)/<exp>/hybrid/ (after sim-analog and synth)"
	@echo "make sweep   CONFIG=... GRID=configs/grids/digits.yaml: co-design sweep on Dask (LocalCluster; SCHEDULER=tcp://host:8786 for a cluster), hybrid vs all-digital -> $(BUILD)/<exp>/sweep/"
	@echo "make bench   [SEEDS=0,1,2,3,4] training benchmarks over seeds (default: each config's bench.seeds, 5) -> $(BUILD)/bench/train.json"
	@echo "make bench-infer  CONFIG=...: the Crystal as C (float32 + fixed point, checked), timed against torch and numpy -> $(BUILD)/<exp>/c/"
	@echo "make bitstream BOARD=icebreaker|ulx3s CONFIG=...: the frontier + UART host link as a bitstream, utilization, fmax -> $(BUILD)/<exp>/boards/<board>/"
	@echo "make flash   BOARD=icebreaker  CONFIG=...: write that bitstream to the board (openFPGALoader)"
	@echo "make report  $(BUILD)/report.md from every result.json present"
	@echo "make mutate  mutation testing of the measurement code -> build/mutate/report.md (hours; not in CI)"
	@echo "make setup   install Debian packages and the Python environment (.venv)"

setup: apt $(VENV)/.installed

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing \
	    || { echo "setup: apt-get failed; install$$missing by hand and re-run" >&2; exit 1; }; \
	fi

# Re-installs when the dependency list changes. torch is pinned (==2.13.0, a CPU build):
# an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# The main job on the default data set: train the crystal (or resume a finished run),
# then its frozen core as an op-amp circuit in ngspice, checked against torch.
# The frontier alone is synthesized here (the other designs take ~1 h: `make synth`).
demo: setup
	$(CB) --build-dir $(BUILD) train --config $(CONFIG) --resume
	$(CB) --build-dir $(BUILD) sim-analog --config $(CONFIG)
	$(CB) --build-dir $(BUILD) synth --config $(CONFIG) $(DEMO_SYNTH)
	$(CB) --build-dir $(BUILD) sim-hybrid --config $(CONFIG)
	$(CB) --build-dir $(BUILD) report
	@echo "Next: make synth && make sim (the all-digital nets beside the hybrid; ~1 h on 2 cores, most of it the parallel frontier on the ECP5: --set rtl.large_part=none skips that), then make sim-hybrid"

train: setup
	$(CB) --build-dir $(BUILD) train --config $(CONFIG)

test: setup lint
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# Mutation testing (mutmut) of the code that turns data into figures; see tests/mutate.py.
mutate: setup
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,mutate]'
	$(BIN)/python tests/mutate.py

quantize: setup
	$(CB) --build-dir $(BUILD) quantize --config $(CONFIG)

synth: setup
	$(CB) --build-dir $(BUILD) synth --config $(CONFIG)

sim: setup
	$(CB) --build-dir $(BUILD) sim --config $(CONFIG) $(if $(WAVES),--waves)

sim-analog: setup
	$(CB) --build-dir $(BUILD) sim-analog --config $(CONFIG)

sim-hybrid: setup
	$(CB) --build-dir $(BUILD) sim-hybrid --config $(CONFIG)

# Co-design sweep (crystalbench.sim.sweep): every grid point through sim-analog and
# sim-hybrid, the all-digital nets once per digital design, as Dask tasks, cached per point.
GRID ?= configs/grids/digits.yaml
SCHEDULER ?=
sweep: setup
	$(CB) --build-dir $(BUILD) sweep --config $(CONFIG) --grid $(GRID) $(if $(SCHEDULER),--scheduler $(SCHEDULER),)

# The analog core as a board to order (crystalbench.analog.manufacture): skidl writes the
# KiCad netlist and checks it (ERC); the netlist is read back and re-run in ngspice.
manufacture: setup
	$(CB) --build-dir $(BUILD) manufacture --config $(CONFIG)

bench: setup
	$(CB) --build-dir $(BUILD) bench $(foreach c,$(BENCH_CONFIGS),--config $(c)) $(if $(SEEDS),--seeds $(SEEDS),)

# The Crystal as C99 (crystalbench.cbackend): compiled with cc, checked against torch and the
# golden model, then latency (batch 1) and throughput (batch 1,024) against torch eager and
# numpy in one process on one thread. Needs a trained Crystal (make train).
bench-infer: setup
	$(CB) --build-dir $(BUILD) compile-c --config $(CONFIG) --bench

# The frontier on a real board (crystalbench.boards): amaranth-boards plans the board top,
# yosys + nextpnr + icepack build it; flash writes it with openFPGALoader.
BOARD ?= icebreaker
bitstream: setup
	$(CB) --build-dir $(BUILD) bitstream --config $(CONFIG) --board $(BOARD)

flash: setup
	$(CB) --build-dir $(BUILD) flash --config $(CONFIG) --board $(BOARD)

report: setup
	$(CB) --build-dir $(BUILD) report

clean:
	rm -rf $(BUILD)
