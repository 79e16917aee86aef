"""Training: the composition root (effective.py: resolve a run config into the EffectiveRun that trains),
the executors (single, stacked, procedure; executors.py chooses), the LightningModules, one fit, and the one
post-fit evaluation they share."""
