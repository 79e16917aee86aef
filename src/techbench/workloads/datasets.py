"""Registered datasets. Each factory returns DataSplits of in-memory tensors; all are generated or read
locally (nothing is downloaded). The defaults are the hyperparameters params.yaml may set."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from techbench.registry import Registry
from techbench.workloads.data import DataSplits, split_train_val

DATASETS = Registry("dataset")


# Options every dataset accepts: a smaller training split and noisy training labels make overfitting visible
# on purpose; validation and test labels stay clean so they still measure generalization.
SUBSET_DEFAULTS: dict[str, Any] = {
    "train_size": 0,  # 0 = the whole training split
    "label_noise": 0.0,  # fraction of training labels replaced by a different, random class
    "resample": False,  # draw the subset and the noise from the run seed (a new training set per seed)
    "classes": [],  # keep only these classes, relabelled 0..k-1 in this order ([] = all): base/novel splits
}


def load_dataset(spec: dict[str, Any], seed: int = 0) -> DataSplits:
    """Build (or fetch from the per-process cache) the dataset a run config names; ``seed`` is the run's seed,
    used only by ``resample: true``."""
    own = {k: v for k, v in spec.items() if k != "name" and k not in SUBSET_DEFAULTS}
    data = _cached(spec["name"], tuple(sorted((k, _hashable(v)) for k, v in own.items())))
    opts = {k: spec.get(k, d) for k, d in SUBSET_DEFAULTS.items()}
    if opts["classes"]:
        data = keep_classes(data, list(opts["classes"]))
    if not opts["train_size"] and not opts["label_noise"]:
        return data
    return subset_train(
        data, opts["train_size"], opts["label_noise"], seed if opts["resample"] else own.get("data_seed", 0)
    )


def keep_classes(data: DataSplits, classes: list[int]) -> DataSplits:
    """Every split restricted to ``classes``, labels renumbered 0..k-1 in the order given."""
    unknown = [c for c in classes if not 0 <= int(c) < data.num_classes]
    if unknown or len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes}: expected distinct labels in 0..{data.num_classes - 1}")
    lookup = torch.full((data.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = lookup[y] >= 0
        return x[mask], lookup[y[mask]]

    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = (
        keep(data.x_train, data.y_train),
        keep(data.x_val, data.y_val),
        keep(data.x_test, data.y_test),
    )
    return DataSplits(x_tr, y_tr, x_val, y_val, x_te, y_te, num_classes=len(classes))


def subset_train(data: DataSplits, train_size: int, label_noise: float, seed: int) -> DataSplits:
    """The first ``train_size`` examples of a seeded permutation of the training split, with a ``label_noise``
    fraction of their labels moved to another class (uniformly among the others)."""
    n = len(data.x_train)
    if train_size > n:
        raise ValueError(f"train_size {train_size} exceeds the training split ({n} examples)")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    idx = torch.randperm(n, generator=g)[: train_size or n]
    x, y = data.x_train[idx], data.y_train[idx].clone()
    flip = torch.rand(len(y), generator=g) < label_noise
    shift = torch.randint(1, data.num_classes, (len(y),), generator=g)
    y[flip] = (y[flip] + shift[flip]) % data.num_classes
    return replace(data, x_train=x, y_train=y)


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):  # a nested data spec (domain_shift's source and target)
        return ("__dict__", tuple(sorted((k, _hashable(x)) for k, x in v.items())))
    return tuple(v) if isinstance(v, list) else v


def _unhash(v: Any) -> Any:
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "__dict__":
        return {k: _unhash(x) for k, x in v[1]}
    return v


@functools.lru_cache(maxsize=8)
def _cached(name: str, items: tuple) -> DataSplits:
    return DATASETS.get(name).factory(**{k: _unhash(v) for k, v in items})


def _standardize(*xs: torch.Tensor) -> list[torch.Tensor]:
    # Statistics of the training split only, so validation/test stay unseen.
    mean, std = xs[0].mean(), xs[0].std().clamp_min(1e-8)
    return [(x - mean) / std for x in xs]


@DATASETS.register(
    "mnist1d",
    description="MNIST-1D (Greydanus 2020): 10 classes of length-40 1-D signals, generated locally",
    defaults={
        "num_samples": 5000,  # split 80/20 into train/test: 4000/1000 as in the paper
        "val_fraction": 0.1,  # of the training split
        "data_seed": 42,
        "scale_coeff": 0.4,
        "max_translation": 48,
        "corr_noise_scale": 0.25,
        "iid_noise_scale": 0.02,
        "shear_scale": 0.75,
        "shuffle_seq": False,
        **SUBSET_DEFAULTS,
    },
)
def mnist1d(num_samples, val_fraction, data_seed, shuffle_seq, **generator) -> DataSplits:
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = get_dataset_args(as_dict=True)
    args.update(generator, num_samples=num_samples, seed=data_seed, shuffle_seq=shuffle_seq)
    state = np.random.get_state()  # make_dataset seeds numpy's global RNG; leave the caller's intact
    try:
        d = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(state)
    x = torch.tensor(d["x"], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d["y"], dtype=torch.long)
    x_test = torch.tensor(d["x_test"], dtype=torch.float32).unsqueeze(1)
    y_test = torch.tensor(d["y_test"], dtype=torch.long)
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, val_fraction, data_seed)
    return DataSplits(x_tr, y_tr, x_val, y_val, x_test, y_test, num_classes=10)


DIGITS_PARTS = ("all", "first_half", "second_half")


def _check_digits(hp: dict[str, Any]) -> None:
    if hp["part"] not in DIGITS_PARTS:
        raise ValueError(f"part {hp['part']!r} unknown; allowed: {', '.join(DIGITS_PARTS)}")
    for k in ("blur", "noise"):
        if not isinstance(hp[k], (int, float)) or hp[k] < 0:
            raise ValueError(f"{k} {hp[k]!r} is out of range: must be a number >= 0")


@DATASETS.register(
    "digits",
    description="scikit-learn's bundled 8x8 handwritten digits (1797 images), as 1-channel images; shifted "
    "domains by rotation, blur, inversion and noise, and disjoint image halves for source and target",
    defaults={
        "test_fraction": 0.2,
        "val_fraction": 0.1,
        "data_seed": 0,
        "image_size": 8,
        "part": "all",  # first_half / second_half: disjoint halves of the 1797 images (a source and a target)
        "rotate": 0.0,  # degrees, counter-clockwise
        "blur": 0.0,  # Gaussian blur sigma, in pixels of the resized image
        "invert": False,  # white digits on black become black on white
        "noise": 0.0,  # std of Gaussian noise added after standardization (drawn from data_seed)
        **SUBSET_DEFAULTS,
    },
    check=_check_digits,
)
def digits(test_fraction, val_fraction, data_seed, image_size, part, rotate, blur, invert, noise) -> DataSplits:
    from sklearn.datasets import load_digits
    from torchvision.transforms import functional as tf

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if part != "all":  # a fixed split of the images, whatever the data_seed: the halves never share an image
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1797))
        half = order[: len(x) // 2] if part == "first_half" else order[len(x) // 2 :]
        x, y = x[half], y[half]
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear")
    if rotate:
        x = tf.rotate(x, float(rotate), interpolation=tf.InterpolationMode.BILINEAR)
    if blur:
        kernel = 2 * int(math.ceil(3 * blur)) + 1
        x = tf.gaussian_blur(x, [kernel, kernel], [float(blur), float(blur)])
    if invert:
        x = 1.0 - x
    x_rest, y_rest, x_test, y_test = split_train_val(x, y, test_fraction, data_seed)
    x_tr, y_tr, x_val, y_val = split_train_val(x_rest, y_rest, val_fraction, data_seed + 1)
    x_tr, x_val, x_test = _standardize(x_tr, x_val, x_test)
    if noise:
        g = torch.Generator().manual_seed(data_seed + 31)
        x_tr, x_val, x_test = (t + noise * torch.randn(t.shape, generator=g) for t in (x_tr, x_val, x_test))
    return DataSplits(x_tr, y_tr, x_val, y_val, x_test, y_test, num_classes=10)


@DATASETS.register(
    "debug",
    description="tiny synthetic 1-D problem (4 noisy templates of length 16) for tests: seconds per run",
    defaults={"num_samples": 256, "length": 16, "num_classes": 4, "noise": 0.5, "data_seed": 0, **SUBSET_DEFAULTS},
)
def debug(num_samples, length, num_classes, noise, data_seed) -> DataSplits:
    g = torch.Generator().manual_seed(data_seed)
    templates = torch.randn(num_classes, length, generator=g)
    y = torch.arange(num_samples) % num_classes
    x = (templates[y] + noise * torch.randn(num_samples, length, generator=g)).unsqueeze(1)
    n_test = num_samples // 4
    x_tr, y_tr, x_val, y_val = split_train_val(x[n_test:], y[n_test:], 0.25, data_seed)
    return DataSplits(x_tr, y_tr, x_val, y_val, x[:n_test], y[:n_test], num_classes=num_classes)


# What torchvision's ImageFolder reads (its IMG_EXTENSIONS); a class folder without one is refused before it.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _check_folder(hp: dict[str, Any]) -> None:
    path = Path(hp["path"]).expanduser()
    if not hp["path"] or not path.is_dir():
        raise ValueError(f"folder not found: {hp['path']!r} (expected one sub-folder of images per class)")
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{hp['path']!r} has no class sub-folders")
    empty = [c.name for c in classes if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in c.rglob("*"))]
    if empty:
        raise ValueError(
            f"class folder(s) {', '.join(empty)} of {hp['path']!r} hold no image; "
            f"image files end in {', '.join(IMAGE_SUFFIXES)}"
        )


@DATASETS.register(
    "image_folder",
    description="your own images: <path>/<class>/*.png|jpg, resized and held in memory",
    defaults={
        "path": "",
        "image_size": 32,
        "grayscale": False,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "data_seed": 0,
        **SUBSET_DEFAULTS,
    },
    check=_check_folder,
)
def image_folder(path, image_size, grayscale, val_fraction, test_fraction, data_seed) -> DataSplits:
    from torchvision import datasets, transforms

    tf = [transforms.Resize((image_size, image_size))]
    tf += [transforms.Grayscale()] if grayscale else [transforms.Lambda(lambda im: im.convert("RGB"))]
    ds = datasets.ImageFolder(str(Path(path).expanduser()), transform=transforms.Compose([*tf, transforms.ToTensor()]))
    x = torch.stack([img for img, _ in ds])
    y = torch.tensor(ds.targets, dtype=torch.long)
    x_rest, y_rest, x_test, y_test = split_train_val(x, y, test_fraction, data_seed)
    x_tr, y_tr, x_val, y_val = split_train_val(x_rest, y_rest, val_fraction, data_seed + 1)
    x_tr, x_val, x_test = _standardize(x_tr, x_val, x_test)
    return DataSplits(x_tr, y_tr, x_val, y_val, x_test, y_test, num_classes=len(ds.classes))


def _check_shift(hp: dict[str, Any]) -> None:
    source, target = hp["source"], hp["target"]
    names = [n for n in DATASETS.names() if n != "domain_shift"]
    if not isinstance(source, dict) or source.get("name") not in names:
        raise ValueError(f"source {source!r}: expected a data spec {{name: ..., ...}}; name one of {', '.join(names)}")
    if not isinstance(target, dict) or not target:
        raise ValueError(
            f"target {target!r}: expected the settings that differ in the target domain, e.g. "
            "{iid_noise_scale: 0.3, data_seed: 7}"
        )
    allowed = set(DATASETS.get(source["name"]).defaults)
    unknown = sorted(set(source) - allowed - {"name"}) + sorted(set(target) - allowed)
    if unknown:
        raise ValueError(f"{unknown} are not settings of {source['name']}; allowed: {', '.join(sorted(allowed))}")


@DATASETS.register(
    "domain_shift",
    description="a labelled source domain and a shifted target domain of the same generator (domain adaptation)",
    defaults={"source": {"name": "mnist1d"}, "target": {}},
    check=_check_shift,
)
def domain_shift(source, target) -> DataSplits:
    """Train and validation splits of the source; test split of the target (what every method is scored on);
    the whole target domain in ``target`` (unlabelled training inputs, labelled validation for the oracle)."""
    entry = DATASETS.get(source["name"])
    source = {**entry.defaults, **source}  # every setting, as a top-level data spec has them
    src, tgt = load_dataset(source), load_dataset({**source, **target})
    if tgt.num_classes != src.num_classes:
        raise ValueError(f"target has {tgt.num_classes} classes, source {src.num_classes}")
    return DataSplits(src.x_train, src.y_train, src.x_val, src.y_val, tgt.x_test, tgt.y_test, src.num_classes, tgt)
