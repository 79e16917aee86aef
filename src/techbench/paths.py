"""Where results, reports and benchmark measurements live: the `paths:` block of params.yaml, declared once
(dvc.yaml reads the same block through its templating, the code through here). Torch-free, so rendering a
report does not load the training stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from techbench.checks import merge_checked
from techbench.errors import ConfigError

PATHS_DEFAULTS = {"results": "results", "reports": "reports", "benchmarks": "benchmarks/results"}


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
    """The studies in the order params.yaml lists them (the chapter's order): the report's order."""
    path = Path(params_file)
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return list((raw or {}).get("studies") or {})
