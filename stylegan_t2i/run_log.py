"""The one logging funnel: named scalars/images/text to TensorBoard and `log.jsonl`.

Training code computes named values (`{"Loss/D": 1.2}`) and hands them to a `RunLog`;
nothing else in the package writes logs.
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
