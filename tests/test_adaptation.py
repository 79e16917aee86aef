"""Domain adaptation (family `adaptation`, dataset `domain_shift`): the losses against the chapter's formulas,
every method through a real Lightning run on a shifted debug domain, the selection rules, and a check that no
choice reads a target test label (poisoned labels leave every selection and every weight unchanged)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_params

from techbench.cli import main
from techbench.config import parse_params
from techbench.techniques import ADAPTATION
from techbench.techniques.adaptation.losses import (
    coral,
    dann_lambda,
    mmd2,
    pseudo_label_loss,
    reverse_gradient,
)
from techbench.techniques.adaptation.selection import ALL_RULES, chosen_epoch, selected
from techbench.training.single import train_single
from techbench.workloads import load_dataset

SHIFT = {
    "name": "domain_shift",
    "source": {"name": "debug", "num_samples": 400},
    "target": {"noise": 0.9, "data_seed": 3},
}
STUDY = {
    "studies": {
        "da": {
            "family": "adaptation",
            "techniques": ADAPTATION.names(),
            "seeds": 2,
            "data": SHIFT,
            "model": {"name": "mlp", "hidden": [16]},
            "train": {"epochs": 3, "batch_size": 32},
        }
    }
}


def test_gradient_reversal_is_the_identity_forward_and_minus_lambda_backward():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.3 * w)
    assert dann_lambda(0.0) == 0.0 and dann_lambda(1.0) > 0.9999
    ramp = [dann_lambda(p / 10) for p in range(11)]
    assert ramp == sorted(ramp)


def _kernel_sum(a, b, scale):
    return sum(np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (scale * m)) for m in (0.25, 0.5, 1.0, 2.0, 4.0))


def test_mmd_is_zero_for_identical_samples_and_the_kernel_mean_embedding_distance_otherwise():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(20, 4, generator=g, dtype=torch.float64)
    t = torch.randn(15, 4, generator=g, dtype=torch.float64) + 1.0
    assert float(mmd2(s, s)) == pytest.approx(0.0, abs=1e-12)
    both = torch.cat([s, t]).numpy()
    scale = np.median(np.sum((both[:, None] - both[None]) ** 2, -1))
    a, b = s.numpy(), t.numpy()
    expected = _kernel_sum(a, a, scale).mean() + _kernel_sum(b, b, scale).mean() - 2 * _kernel_sum(a, b, scale).mean()
    assert float(mmd2(s, t)) == pytest.approx(expected, rel=1e-9)
    assert float(mmd2(s, t)) > float(mmd2(s, s[torch.randperm(20, generator=g)][:15]))


def test_coral_loss_and_gradient_match_the_chapters_formula():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(30, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(25, 5, generator=g, dtype=torch.float64) * 2.0
    d = 5
    cs, ct = np.cov(s.detach().numpy().T), np.cov(t.numpy().T)
    loss = coral(s, t)
    assert float(loss.detach()) == pytest.approx(np.sum((cs - ct) ** 2) / (4 * d * d), rel=1e-10)
    loss.backward()
    # dL/dX_s = X̄_s (C_s − C_t) / ((n − 1) d²), X̄_s the centred source features
    centred = s.detach().numpy() - s.detach().numpy().mean(0)
    assert np.allclose(s.grad.numpy(), centred @ (cs - ct) / ((30 - 1) * d * d), rtol=1e-8)


def test_pseudo_labels_come_only_from_predictions_at_least_as_confident_as_the_threshold():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 9.0], [1.0, 1.2, 0.0]], requires_grad=True)
    loss, mask = pseudo_label_loss(logits, threshold=0.9)
    assert mask.tolist() == [True, False, True, False]
    expected = F.cross_entropy(logits[[0, 2]], torch.tensor([0, 2]), reduction="sum") / 4
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    loss.backward()
    assert torch.all(logits.grad[[1, 3]] == 0)
    none, mask = pseudo_label_loss(logits, threshold=1.0)
    assert not mask.any() and float(none) == 0.0


def test_selection_rules_read_validation_curves_only():
    curves = {
        "val/acc": [0.5, 0.7, 0.6],
        "target/val_acc": [0.2, 0.3, 0.4],
        "target/val_entropy": [1.0, 0.5, 0.8],
        "target/test_acc": [0.11, 0.22, 0.33],
    }
    assert [chosen_epoch(curves, r) for r in ALL_RULES] == [1, 2, 2, 1]
    poisoned = {**curves, "target/test_acc": [0.9, 0.0, 0.0]}
    assert [chosen_epoch(poisoned, r) for r in ALL_RULES] == [1, 2, 2, 1]
    assert selected(curves)["select/target_val/test_acc"] == 0.33 and selected(curves)["select/entropy/epoch"] == 2.0


@pytest.fixture(scope="module")
def da_runs():
    return {r.technique: r for r in parse_params(copy.deepcopy(STUDY)).studies["da"].runs}


def test_no_choice_reads_a_target_test_label(da_runs):
    """Poisoned target test labels change the target test accuracy and nothing else: the same weights, the
    same validation curves, the same epoch under every selection rule."""
    data = load_dataset(da_runs["mmd"].data)  # the cached object every run of this data spec gets
    clean = data.y_test.clone()
    assert data.y_test is data.target.y_test
    for technique in ("source_only", "mmd", "pseudo_label"):
        a = train_single(da_runs[technique], 0)
        data.y_test.copy_((clean + 1) % data.num_classes)
        try:
            b = train_single(da_runs[technique], 0)
        finally:
            data.y_test.copy_(clean)
        assert a.metrics["test/acc"] != b.metrics["test/acc"]
        for rule in ALL_RULES:
            assert a.metrics[f"select/{rule}/epoch"] == b.metrics[f"select/{rule}/epoch"]
        for key in ("val/acc", "val/loss", "target/val_acc", "target/val_entropy", "train/loss"):
            assert a.histories[key] == b.histories[key]
        for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
            assert torch.equal(p, q), name


def test_every_method_trains_on_a_shifted_domain_and_records_target_curves_and_discrepancy(workdir):
    from mlflow.tracking import MlflowClient

    write_params(workdir / "params.yaml", copy.deepcopy(STUDY))
    assert main(["run", "da"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("da")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'run'")
    assert sorted({r.data.tags["technique"] for r in runs}) == sorted(ADAPTATION.names())
    for r in runs:
        m = r.data.metrics
        assert r.info.status == "FINISHED"
        # the run's own test accuracy is the target's, with its last weights: the fixed-budget rule
        assert m["test/acc"] == pytest.approx(m["select/last/test_acc"], abs=1e-6)
        assert m["adapt/mmd2"] >= 0.0 and -2.0 <= m["adapt/a_distance"] <= 2.0
        assert len(client.get_metric_history(r.info.run_id, "target/val_acc")) == 3
    assert main(["report", "da"]) == 0
    md = (workdir / "reports" / "da.md").read_text()
    assert "Chosen by ORACLE target validation" in md and "Share of the gap from `source_only`" in md


def test_dann_trains_its_domain_classifier_with_the_models_optimizer(da_runs):
    from techbench.training.effective import build_run_model, resolve
    from techbench.training.module import TechniqueModule, configure

    cfg = da_runs["dann"]
    data = load_dataset(cfg.data)
    run = resolve(cfg, data)
    model = build_run_model(run, data)

    class Host:  # what configure reads of a LightningModule
        trainer = type("T", (), {"max_epochs": 3, "estimated_stepping_batches": 30})()

    TechniqueModule(model, run)
    optimizer = configure(Host(), model, run)
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    head = model._domain_head
    assert {id(p) for p in head.parameters()} <= {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert "_domain_head" not in "".join(model.state_dict())


def test_a_method_without_a_target_domain_or_a_bad_target_is_a_config_error(workdir, capsys):
    raw = copy.deepcopy(STUDY)
    raw["studies"]["da"]["data"] = {"name": "debug"}
    write_params(workdir / "params.yaml", raw)
    assert main(["run", "da"]) == 2
    assert "domain_shift" in capsys.readouterr().err
    raw["studies"]["da"]["data"] = {**SHIFT, "target": {"shear": 2.0}}
    write_params(workdir / "params.yaml", raw)
    assert main(["run", "da"]) == 2
    err = capsys.readouterr().err
    assert "studies.da.data" in err and "noise" in err
    assert not (workdir / "results" / "da").exists()
