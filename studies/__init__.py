"""Experiments on the spatial-frequency bias, run through stylefreq's own entry points
(training.config + training.launch as train.py, metrics as calc_metrics.py): `python -m studies`."""
