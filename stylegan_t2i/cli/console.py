"""The console commands that setup.py installs (`stylegan-t2i-train`, ...): each runs its
command module's `main` and exits 0. (Pointing an entry point at `main` itself would not do:
the console-script wrapper passes the return value, a path or a report, to `sys.exit`, which
prints it and exits 1.) The command module is imported only when its command runs."""
from __future__ import annotations

import importlib
from typing import Callable


def _command(module: str) -> Callable[[], None]:
    def run() -> None:
        importlib.import_module(f"stylegan_t2i.cli.{module}").main()
    run.__name__ = run.__qualname__ = module
    run.__doc__ = f"Run stylegan_t2i.cli.{module}.main on sys.argv."
    return run


train = _command("train")
generate = _command("generate")
train_ddpm = _command("train_ddpm")
evaluate = _command("evaluate")
compare = _command("compare")
sweep_ddpm = _command("sweep_ddpm")
train_text_encoder = _command("train_text_encoder")
project = _command("project")
export_generator = _command("export_generator")
export_onnx = _command("export_onnx")
plot_run = _command("plot_run")
