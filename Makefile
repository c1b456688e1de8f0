# Convenience targets. Everything here is also a plain command (see README.md).
PYTHON ?= python
STUDY_OUTDIR ?= study-cosine
STUDY_ARGS ?=

.PHONY: test study-cosine study-ablation

test:
	$(PYTHON) -m pytest -q tests

# The planar-cosine study (README "Frequency-shifted synthesis"); scale it with STUDY_ARGS, e.g.
# STUDY_ARGS="--seeds=0,1,2,3,4 --kimg=40".
study-cosine:
	$(PYTHON) -m studies cosine --outdir=$(STUDY_OUTDIR) --threads=1 $(STUDY_ARGS)

# One training choice changed at a time around the output shift (README "Studies").
study-ablation:
	$(PYTHON) -m studies ablation --outdir=study-ablation --threads=1 $(STUDY_ARGS)
