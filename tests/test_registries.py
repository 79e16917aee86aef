"""Registry-driven tests: every registered optimizer, dataset and model is exercised automatically."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from techbench.checks import bound_of
from techbench.techniques import FAMILIES, OPTIMIZERS
from techbench.techniques.optimizers import build_optimizer
from techbench.workloads import DATASETS, MODELS, build_model, load_dataset


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_builds_and_a_step_lowers_the_loss(name):
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 16), torch.randint(0, 4, (64,))
    entry = OPTIMIZERS.get(name)
    # Full-batch second-order methods are benchmarked on the convex workload they are meant for.
    spec = (
        {"name": "logreg"}
        if entry.info.full_batch
        else {"name": "mlp", "hidden": [16], "activation": "relu", "dropout": 0.0}
    )
    model = build_model(spec, (1, 16), 4)
    opt = build_optimizer({"name": name, **entry.defaults}, model)
    before = F.cross_entropy(model(x), y)
    closure_kind = entry.info.closure or "none"

    def closure():
        # "backward": the optimizer re-evaluates loss and gradients (L-BFGS); "loss_graph": it differentiates
        # the returned loss itself (Newton).
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if closure_kind == "backward":
            loss.backward()
        return loss

    for _ in range(5):
        if closure_kind == "none":
            closure().backward()
            opt.step()
        else:
            opt.step(closure)
    assert F.cross_entropy(model(x), y) < before


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=lambda f: f.name)
def test_search_spaces_are_well_formed(family):
    for entry in family.registry:
        # Entries with numeric hyperparameters must be tunable (switches such as restore_best are not);
        # batch regimes are fixed recipes, and an epoch budget is set by the protocol, not tuned.
        numeric = [
            v
            for k, v in entry.defaults.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epochs"
        ]
        if family.name != "batching" and numeric:
            assert entry.search_space, f"{entry.name} declares no search space"
        for hp, dim in entry.search_space.items():
            assert hp in entry.defaults, f"{entry.name}: {hp} is tunable but has no default"
            assert "choices" in dim or dim["low"] < dim["high"]
            bound = bound_of(entry, hp)
            if bound is not None and "low" in dim:
                lo = bound[0]
                assert lo is None or dim["low"] >= lo


@pytest.fixture
def image_folder(tmp_path):
    """A tiny user folder: two classes of 6 small PNGs each."""
    for c, shade in (("cats", 40), ("dogs", 200)):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("RGB", (10, 12), (shade + i, shade, 255 - shade)).save(tmp_path / c / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_splits_are_disjoint_sized_and_standardized(name, image_folder):
    hp = dict(DATASETS.get(name).defaults)
    if name == "image_folder":
        hp.update(path=str(image_folder), image_size=8)
    if name == "mnist1d":
        hp.update(num_samples=500)
    d = load_dataset({"name": name, **hp})
    n = [len(d.x_train), len(d.x_val), len(d.x_test)]
    assert min(n) > 0 and len(d.y_train) == n[0]
    assert int(d.y_train.max()) < d.num_classes
    assert d.x_train.shape[1:] == d.x_val.shape[1:] == d.x_test.shape[1:]
    assert torch.isfinite(d.x_train).all()


def test_mnist1d_is_the_papers_4000_1000_split():
    d = load_dataset({"name": "mnist1d", **DATASETS.get("mnist1d").defaults})
    assert len(d.x_train) + len(d.x_val) == 4000 and len(d.x_test) == 1000
    assert d.input_shape == (1, 40)


def test_image_folder_reads_the_users_classes(image_folder):
    d = load_dataset(
        {
            "name": "image_folder",
            **{**DATASETS.get("image_folder").defaults, "path": str(image_folder), "image_size": 8},
        }
    )
    assert d.num_classes == 2 and d.input_shape == (3, 8, 8)
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 12


@pytest.mark.parametrize("name", MODELS.names())
def test_model_maps_a_batch_to_logits_and_backpropagates(name):
    shape = (1, 16, 16) if name == "timm" else (1, 40)
    model = build_model({"name": name, **MODELS.get(name).defaults}, shape, 10)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_timm_loads_local_pretrained_file_through_timm(tmp_path):
    """The pretrained path hub weights take, pointed at a file: backbone kept, new head re-initialized."""
    from safetensors.torch import save_file

    src = build_model({"name": "timm", "arch": "test_resnet", "pretrained_file": "", "drop_rate": 0.0}, (1, 16, 16), 10)
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    dst = build_model(
        {
            "name": "timm",
            "arch": "test_resnet",
            "pretrained_file": str(tmp_path / "w.safetensors"),
            "drop_rate": 0.0,
        },
        (1, 16, 16),
        3,
    )
    assert torch.equal(dst.conv1[0].weight, src.conv1[0].weight)
    assert dst.get_classifier().out_features == 3


def test_first_order_optimizers_search_the_same_decades_around_their_default_lr():
    """Equal tuning budgets need search spaces of equal size: every first-order optimizer's LR is log-uniform over
    default × 10^±2 (second-order methods, whose step of 1 is their own, search below 1)."""
    from techbench.techniques import OPTIMIZERS

    for entry in OPTIMIZERS:
        space, lr = entry.search_space["lr"], entry.defaults["lr"]
        if entry.info.closure is None:
            assert space["log"] and (space["low"], space["high"]) == pytest.approx((lr / 100, lr * 100)), entry.name
        else:
            assert space["high"] <= 1.0, entry.name
