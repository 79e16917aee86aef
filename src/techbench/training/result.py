"""What an executor hands back for one (config, seed): the effective configuration, metrics, per-step
histories, outcome and the trained model; ``record()`` turns it into the RunRecord tracking writes."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from techbench import code_version
from techbench.records import RunRecord
from techbench.specs import EffectiveRun
from techbench.training.evaluation import machine


@dataclass
class RunResult:
    run: EffectiveRun
    seed: int
    metrics: dict[str, float]
    histories: dict[str, list[float]] = field(default_factory=dict)
    outcome: str = "completed"  # or "diverged"
    diverged_step: int | None = None
    model: nn.Module | None = None  # the kept weights, for callers that measure them further
    predictions: tuple[torch.Tensor, torch.Tensor] | None = None  # (test probabilities, test labels)
    tags: dict[str, str] = field(default_factory=dict)  # e.g. execution = vectorized
    stop_reason: str | None = None  # a stack member stopped alone: "diverged" or an epoch hook's reason (pruned)

    @classmethod
    def ended(cls, run, seed, metrics, histories, diverged_step, model, predictions, **tags: str) -> RunResult:
        """A run that ended, diverged at ``diverged_step`` (an update index) or completed (None)."""
        if diverged_step is not None:
            metrics["diverged_step"] = float(diverged_step)
        outcome = "completed" if diverged_step is None else "diverged"
        return cls(run, seed, metrics, histories, outcome, diverged_step, model, predictions, dict(tags))

    @property
    def name(self) -> str:
        cfg = self.run.config
        return f"{cfg.label}/{cfg.workload}/seed{self.seed}"

    def record(self, kind: str = "run", parent_run_id: str | None = None, **tags: str) -> RunRecord:
        cfg = self.run.config
        identity = {
            "study": cfg.study,
            "family": cfg.family,
            "technique": cfg.technique,
            "variant": cfg.variant,
            "workload": cfg.workload,
            "seed": str(self.seed),
            "config_hash": cfg.config_hash(),
            "code_version": code_version(),
            "machine": machine(),
            "kind": kind,
            "execution": "sequential",
        }
        n_params = sum(p.numel() for p in self.model.parameters()) if self.model is not None else 0
        artifacts: dict[str, Any] = {}
        if self.predictions is not None and self.run.train["save_predictions"]:
            artifacts["predictions/test.npz"] = _npz(*self.predictions)
        return RunRecord(
            study=cfg.study,
            name=self.name,
            kind=kind,
            seed=self.seed,
            tags={**identity, **self.tags, **tags, "outcome": self.outcome},
            config={**self.run.as_dict(), "seed": self.seed, "n_params": n_params},
            requested=cfg.as_dict(),
            metrics=dict(self.metrics),
            histories=dict(self.histories),
            artifacts=artifacts,
            outcome=self.outcome,
            parent_run_id=parent_run_id,
        )


def _npz(probs: torch.Tensor, labels: torch.Tensor) -> bytes:
    """Test probabilities (float16) with their labels, for decompositions over seeds."""
    buf = io.BytesIO()
    np.savez(buf, probs=probs.numpy().astype(np.float16), labels=labels.numpy().astype(np.int64))
    return buf.getvalue()
