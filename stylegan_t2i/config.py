"""Config dataclasses <-> JSON-able dicts, strictly (unknown keys are an error, removed ones are dropped)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A frozen dataclass as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild `cls` from `data`; unknown keys raise, missing keys take the defaults.

    A class may list in `REMOVED_KEYS` the fields it no longer has: older checkpoints still
    hold them, and those keys are dropped instead of raising (each class says why it may).
    """
    names = {f.name: f for f in dataclasses.fields(cls)}
    removed = getattr(cls, "REMOVED_KEYS", ())
    data = {key: value for key, value in data.items() if key not in removed}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}")
    kwargs = {}
    for key, value in data.items():
        # JSON has no tuples; fields declared with a tuple default get them back.
        default = names[key].default
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def save_config_json(path: str | Path, configs: dict[str, Any]) -> None:
    """Write several named configs (dataclasses or dicts) to one JSON file."""
    out = {name: config_to_dict(c) if dataclasses.is_dataclass(c) else c for name, c in configs.items()}
    Path(path).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
