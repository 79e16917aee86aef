"""Gradient-computation probes on the debug workload: the equivalences the chapter states, with real numbers,
and every registered probe of the family run at tiny sizes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import PROBE_SMOKE_HP
from torch import nn
from torch.func import jacfwd, jacrev

from techbench.config import component, merge_checked
from techbench.probes import PROBES, ProbeContext, run_probe
from techbench.probes.gradient_autodiff import _test_functions, manual_backprop
from techbench.probes.gradient_common import FAMILY, mlp_spec, rel_diff, sample_batch, study_model
from techbench.probes.gradient_computation import _batched_grads, _loop_grads, _vmap_grads
from techbench.probes.gradient_memory import _accumulate, _checkpoint_one, _grads
from techbench.report.probes import VIEWS
from techbench.training.memory import peak_step_memory, saved_tensor_bytes, tracked_step_memory
from techbench.workloads import DATASETS, MODELS

CPU = torch.device("cpu")

# Sizes small enough for the whole family to run in seconds; a probe missing here runs at its defaults.
TINY = PROBE_SMOKE_HP


@pytest.fixture(scope="module")
def ctx() -> ProbeContext:
    return ProbeContext(
        data=component("data", DATASETS, {"name": "debug"}),  # 144 training examples of shape (1, 16)
        model=component("model", MODELS, {"name": "mlp", "hidden": [16]}),
        train={},
        hardware={"accelerator": "cpu"},
        components={},
        seed=0,
    )


def test_backprop_matches_finite_differences(ctx):
    rows = {
        r["row"]: r
        for r in run_probe(
            "gradient_check", ctx, _hp("gradient_check", activations=["tanh", "sigmoid"], coords=0, h=[1e-6, 1e-5])
        ).rows
    }
    for act in ("tanh", "sigmoid"):
        assert rows[f"{act} h=1e-05"]["fd_max_rel_err"] < 1e-6, rows[f"{act} h=1e-05"]
        # At h=1e-6 rounding of J(θ ± h) alone is ~eps·|J|/h; the error must be of that size, not larger.
        fine = rows[f"{act} h=1e-06"]
        assert fine["fd_max_abs_err"] < 5 * fine["fd_roundoff_level"]
        assert fine["fd_norm_rel_err"] < 1e-6
        assert rows[act]["manual_vs_autograd"] < 1e-12
        assert rows[act]["delta_out_vs_autograd"] < 1e-12


def test_manual_backprop_equals_autograd_for_deeper_relu_mlp(ctx):
    x, y, data = sample_batch(ctx, 32, torch.float64, CPU)
    model = study_model(ctx, data, torch.float64, CPU, mlp_spec(ctx, [12, 10, 8], "relu"))
    auto = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    assert rel_diff(manual_backprop(model, x, y, "relu")[0], list(auto)) < 1e-12


def test_per_example_loop_equals_batched_and_vmap(ctx):
    x, y, data = sample_batch(ctx, 32, torch.float64, CPU)
    model = study_model(ctx, data, torch.float64, CPU).eval()
    loop = _loop_grads(model, x, y)
    assert rel_diff(_batched_grads(model, x, y), loop) < 1e-10
    assert rel_diff(_vmap_grads(model, x, y), loop) < 1e-10


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_accumulated_micro_batches_equal_one_batch(ctx, dtype, tol):
    k, b = 4, 16
    x, y, data = sample_batch(ctx, k * b, dtype, CPU)
    model = study_model(ctx, data, dtype, CPU)
    _accumulate(model, x, y, 1)
    whole = _grads(model)
    _accumulate(model, x, y, k)
    assert rel_diff(_grads(model), whole) <= tol


def test_checkpointing_same_gradients_less_activation_memory():
    hp = {"width": 64, "batch_size": 64, "repeats": 1, "warmup": 0}
    m = _checkpoint_one(16, hp, seed=0, device=CPU)
    assert m["segments"] == 4
    assert m["rel_grad_diff"] < 1e-12
    assert m["saved_mb_ckpt"] < 0.7 * m["saved_mb_plain"]
    assert m["act_mb_ckpt"] < 0.7 * m["act_mb_plain"]


def test_forward_and_reverse_jacobians_equal():
    fns = _test_functions({"n_inputs": 30, "n_outputs": 25, "hidden": 12}, 0, torch.float64, CPU)
    for f, x in fns.values():
        torch.testing.assert_close(jacfwd(f)(x), jacrev(f)(x), rtol=1e-12, atol=1e-14)


def test_live_tensor_bytes_counts_peak_and_frees():
    mb = 2**20
    m = tracked_step_memory(lambda: torch.ones(mb // 4) * 2)  # two 1 MiB float32 tensors alive at once
    assert m.peak == 2 * mb
    model = nn.Linear(256, 256)
    x = torch.randn(64, 256)
    params = sum(p.numel() * 4 for p in model.parameters())

    def step():
        model.zero_grad(set_to_none=True)
        model(x).relu().sum().backward()

    peak = peak_step_memory(step, "cpu", [model, x])
    assert params + x.numel() * 4 < peak < 3 * params + 4 * x.numel() * 4
    assert saved_tensor_bytes(lambda: model(x).relu().sum(), model.parameters()) == 2 * x.numel() * 4


def _hp(name: str, **override) -> dict:
    entry = PROBES.get(name)
    # merge_checked: the tiny sizes must be valid params.yaml overrides of the registered defaults.
    return merge_checked(f"probes.{name}", entry.defaults, {**TINY.get(name, {}), **override})


FAMILY_PROBES = [e.name for e in PROBES if e.info.topic == FAMILY]


def test_family_has_the_expected_probes():
    expected = {"per_example_loop", "vectorized", "mixed_precision", "grad_checkpointing", "grad_accumulation"}
    assert expected | {"forward_mode", "reverse_mode", "gradient_check", "backprop_cost"} <= set(FAMILY_PROBES)


@pytest.mark.parametrize("name", FAMILY_PROBES)
def test_probe_runs_at_tiny_sizes(name, ctx, tmp_path):
    results = [run_probe(name, dataclasses.replace(ctx, seed=s), _hp(name)).as_dict() for s in (0, 1)]
    for res in results:
        assert res["rows"] and res["notes"]
        for row in res["rows"]:
            assert isinstance(row["row"], str)
            nums = [v for k, v in row.items() if k != "row"]
            assert nums and all(isinstance(v, float | int) and math.isfinite(v) for v in nums), row
    sentences = VIEWS[name].verdict(results)
    assert sentences and all(isinstance(s, str) and s for s in sentences)
    path = VIEWS[name].plot(results, tmp_path / f"{name}.png")
    assert path is not None and path.stat().st_size > 0
