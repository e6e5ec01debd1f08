"""The one logging funnel: named scalars/images/text to TensorBoard and `log.jsonl`.

Training code computes named values (`{"Loss/D": 1.2}`) and hands them to a `RunLog`;
nothing else in the package writes logs. `read_log` and `latest_history` read log.jsonl back
(tools/plot_run.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch


class RunLog:
    """Writes to `run_dir` (TensorBoard events + log.jsonl). Inactive on non-zero ranks."""

    def __init__(self, run_dir: str | Path | None, active: bool = True):
        self.active = active and run_dir is not None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._writer = None
        self._jsonl = None
        if self.active:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))
            self._jsonl = open(self.run_dir / "log.jsonl", "a", encoding="utf-8")

    def scalars(self, step: int, values: dict[str, float], **extra) -> None:
        """Log `values` at global `step` (images shown); `extra` goes to log.jsonl only."""
        if not self.active:
            return
        clean = {k: float(v) for k, v in values.items()}
        for tag, value in clean.items():
            self._writer.add_scalar(tag, value, step)
        record = {"step": int(step), "time": time.time(), **extra, **clean}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def image(self, tag: str, img_u8: np.ndarray | torch.Tensor, step: int) -> None:
        """`img_u8`: [H, W, 3] uint8."""
        if not self.active:
            return
        img = torch.as_tensor(np.asarray(img_u8))
        self._writer.add_image(tag, img, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if not self.active:
            return
        # TensorBoard renders text as markdown; indenting keeps JSON as a code block.
        self._writer.add_text(tag, "    " + text.replace("\n", "\n    "), step)

    def flush(self) -> None:
        if self.active:
            self._writer.flush()

    def close(self) -> None:
        if self.active:
            self._writer.close()
            self._jsonl.close()
            self.active = False


class LogError(ValueError):
    """A log.jsonl that cannot be read; the message is one line naming the file (and line)."""


def read_log(path: str | Path) -> list[dict]:
    """The records of a log.jsonl in file order: each a JSON object with an integer "step" (images
    shown) and "time", then the scalars. Missing, empty or malformed: LogError."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LogError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LogError(f"{path}: cannot read ({e})") from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise LogError(f"{path} line {i}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or type(record.get("step")) is not int:
            raise LogError(f"{path} line {i}: not a record with an integer 'step'")
        records.append(record)
    if not records:
        raise LogError(f"{path}: empty (no records)")
    return records


def latest_history(records: list[dict]) -> list[dict]:
    """The records of the run as it now stands. A resumed run appends to the same log from its
    snapshot's step, so a step at or below an earlier one replaces the records from there on."""
    out = []
    for record in records:
        while out and out[-1]["step"] >= record["step"]:
            out.pop()
        out.append(record)
    return out
