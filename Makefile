# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test bench image image-test hil

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/station run --config config/station-sim.toml --sim config/sim/demo.toml --speed 30 --web

# Three test processes, each taking whole files: most tests wait on simulated phones and
# stations in real time, so three share two cores well (13.5 min in one process, 6.5 in three).
# Tests that compare timings measured one after the other run alone afterwards (marker serial).
test: install
	$(BIN)/python -m pytest -q -n 3 --dist loadfile -m 'not serial'
	$(BIN)/python -m pytest -q -m serial

bench: install
	$(BIN)/python -m bench

# The SD-card image (root; about 15 minutes the first time, see image/README.md).
image:
	image/build.sh

# The image's files checked (units, udev rules, shell scripts), then the built image booted
# in QEMU: the station Ready, the watchdog restart, the graceful stop (about 5 minutes).
image-test: install
	$(BIN)/python -m pytest -q tests/test_image_scripts.py tests/test_systemd.py
	$(PYTHON) image/boot_test.py

# Hardware in the loop: the amd64 appliance in QEMU with gadget phones on dummy_hcd, met by the
# real kernel, udev and usbmuxd (root; builds the amd64 image first if missing; image/hil.py).
hil:
	$(PYTHON) image/hil.py
