"""Where results, reports and benchmark measurements live: the `paths:` block of params.yaml, declared once
(dvc.yaml reads the same block through its templating, the code through here). Torch-free, so rendering a
report does not load the training stack."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from techbench.checks import merge_checked
from techbench.errors import ConfigError

PATHS_DEFAULTS = {
    "results": "results",
    "reports": "reports",
    "benchmarks": "benchmarks/results",
    "models": "models",  # the pretrain stage's source models: <models>/<name>/model.safetensors + card.json
}


def parse_paths(given: Any) -> dict[str, str]:
    paths = merge_checked("paths", PATHS_DEFAULTS, given)
    for name, value in paths.items():
        if not value:
            raise ConfigError(f"paths.{name}", "expected a non-empty path")
    return paths


def read_paths(params_file: str | Path = "params.yaml") -> dict[str, str]:
    """The paths block of a params file (defaults where the file or the block is missing)."""
    path = Path(params_file)
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return parse_paths((raw or {}).get("paths"))


def study_order(params_file: str | Path = "params.yaml") -> list[str]:
    """The studies in the order params.yaml lists them (the chapter's order; transfer studies after the others):
    the report's order."""
    path = Path(params_file)
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return [*((raw or {}).get("studies") or {}), *((raw or {}).get("transfer") or {})]


@lru_cache(maxsize=32)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes ("missing" when absent), read once per version of the file."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)
