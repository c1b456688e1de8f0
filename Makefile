# Convenience targets. Everything here is also a plain command (see README.md).
PYTHON ?= python
STUDY_OUTDIR ?= study-cosine
STUDY_ARGS ?=
# One torch thread: the tiny default networks gain nothing from more, and on a busy machine
# OpenMP's spinning threads slow every small op down many times.
STUDY_THREADS ?= 1

.PHONY: test study-cosine

test:
	$(PYTHON) -m pytest -q tests

# The planar-cosine frequency-bias study (README "Frequency-shifted synthesis"): tiny CPU config by
# default; scale up with e.g. STUDY_ARGS="--resolution=128 --low=3,3 --high=61,61 --kimg=2000 ...".
study-cosine:
	$(PYTHON) -m metrics.cosine_study --outdir=$(STUDY_OUTDIR) --threads=$(STUDY_THREADS) $(STUDY_ARGS)
