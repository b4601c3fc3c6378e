"""Training configs: a dataclass filled from one ``[section]`` of a TOML file plus command-line overrides."""

from __future__ import annotations

import os
import tomllib
from typing import Any, TypeVar

T = TypeVar("T")


def load_config(cls: type[T], section: str, path: str | os.PathLike[str] | None, overrides: dict[str, Any],
                what: str) -> T:
    """``cls`` built from ``[section]`` of the TOML file at ``path``; ``None`` overrides are ignored.

    An unknown key is an error naming it, so a typo in a config never silently falls back to a default.
    """
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            values = tomllib.load(f).get(section, {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown {what} options: {sorted(unknown)}")
    return cls(**values)
