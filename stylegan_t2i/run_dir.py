"""Run directories: `runs/NNNNN-<desc>/`, numbered in creation order."""
from __future__ import annotations

import re
from pathlib import Path

_RUN_NAME = re.compile(r"^(\d{5})-")


def run_dirs(out: str | Path) -> list[Path]:
    """Existing run directories under `out`, oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    runs = [p for p in out.iterdir() if p.is_dir() and _RUN_NAME.match(p.name)]
    return sorted(runs, key=lambda p: int(_RUN_NAME.match(p.name).group(1)))


def create_run_dir(out: str | Path, desc: str) -> Path:
    """Make `out/NNNNN-desc` with the next free number."""
    existing = run_dirs(out)
    number = int(_RUN_NAME.match(existing[-1].name).group(1)) + 1 if existing else 0
    path = Path(out) / f"{number:05d}-{desc}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def run_desc(path: str | Path) -> str:
    """The `desc` a run directory was created with: its name after `NNNNN-`."""
    return _RUN_NAME.sub("", Path(path).name, count=1)


def latest_run_dir(out: str | Path) -> Path | None:
    runs = run_dirs(out)
    return runs[-1] if runs else None
