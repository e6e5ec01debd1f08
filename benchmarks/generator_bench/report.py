"""What every mode prints and writes: markdown tables, and one JSON file of the rows."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch

from stylegan_t2i.measure import machine_description


def _cell(value) -> str:
    """A number with three significant figures or so; text and integers as they are."""
    if isinstance(value, (str, int)):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def markdown(rows: Sequence[dict], columns: Sequence[str], head: Sequence[str] | None = None) -> str:
    """A markdown table of `columns` of the rows under the titles `head` (default: the column
    keys); a row without a column shows '-'."""
    head = list(head or columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    lines += ["| " + " | ".join(_cell(r[c]) if c in r else "-" for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str, mode: str, rows: Sequence[dict], args: argparse.Namespace, device: torch.device) -> Path:
    """{"mode", "machine", "args", "rows"} to `path`: the figures and what produced them."""
    out = Path(path)
    try:
        out.write_text(json.dumps({"mode": mode, "machine": machine_description(device), "args": vars(args),
                                   "rows": list(rows)}, indent=1) + "\n")
    except OSError as e:
        raise SystemExit(f"bench_generator.py: --json {path}: cannot write it ({e.strerror}); "
                         f"pass a path in a writable folder") from None
    return out
