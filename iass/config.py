"""params.yaml: every knob of the pipeline in one file (DVC reads the same file)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from iass import REPO_ROOT
from iass.errors import ConfigError

DEFAULT_PARAMS = REPO_ROOT / "params.yaml"


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Load params.yaml (safe loader) and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path) if path else DEFAULT_PARAMS
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(params).__name__}")
    params = copy.deepcopy(params)
    for item in overrides or []:
        key, _, value = item.partition("=")
        if not _:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return params


def section(params: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(params.get(name) or {})


def add_params_arguments(parser, example: str | None = None) -> None:
    """``--params FILE`` and, when ``example`` is given, repeatable ``-S key.sub=value``
    overrides (read back with ``load_params(args.params, args.overrides)``)."""
    parser.add_argument("--params", default=None, metavar="FILE",
                        help="params file (default: the repository's params.yaml)")
    if example is not None:
        parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE",
                            help=f"override a param, e.g. -S {example} (repeatable)")
