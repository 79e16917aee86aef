"""The one place that chooses how the seeds of a run config train: the procedure executor for a procedure
family (restarts), the stacked executor when the study asks for ``execution: vectorized`` and the entries allow
it, else the single executor one seed at a time. Every executor ends in the same post-fit evaluation and hands
back one RunResult per seed; a run that could not be stacked says why in its ``stack_refused`` tag."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from techbench.specs import RunConfig
from techbench.techniques import FAMILIES
from techbench.training.effective import resolve
from techbench.training.procedure import train_procedure
from techbench.training.result import RunResult
from techbench.training.single import train_single
from techbench.training.stacked import train_stacked, unstackable
from techbench.workloads import load_dataset

log = logging.getLogger("techbench")


def execute(cfg: RunConfig, seeds: list[int], execution: str = "sequential") -> Iterator[RunResult]:
    """Train the ``seeds`` of ``cfg``; results come in seed order as each finishes."""
    if FAMILIES[cfg.family].procedure:  # a procedure trains several solutions per seed
        for seed in seeds:
            yield train_procedure(cfg, seed, execution)
        return
    refused = {}
    if execution == "vectorized" and len(seeds) > 1:
        data = load_dataset(cfg.data, seeds[0])
        why = unstackable(resolve(cfg, data), data)
        if why is None:
            yield from train_stacked(cfg, seeds)
            return
        log.info("%s: sequential seeds (%s)", cfg.label, why)
        refused = {"stack_refused": why}
    for seed in seeds:
        result = train_single(cfg, seed)
        result.tags.update(refused)
        yield result
