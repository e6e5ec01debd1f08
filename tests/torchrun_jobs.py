"""The training scripts under `torchrun` on CPU (gloo, one thread per rank), for the data-parallel
tests (test_distributed.py, test_elastic.py), and the comparison of their checkpoints' tensors."""
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def start_torchrun(script: str, args: list[str], log_path: Path, nproc: int = 2,
                   launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """`torchrun --standalone --nproc_per_node nproc [launcher flags] script args` in the
    background, its output to `log_path` (a pipe nobody reads would fill up and stall it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *launcher, str(ROOT / script), *args]
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_torchrun(job: subprocess.Popen, log_path: Path, timeout_s: float = 600) -> str:
    """Wait for a job of `start_torchrun` to succeed; returns its output."""
    try:
        job.wait(timeout=timeout_s)
    finally:
        stop_torchrun(job)
    output = log_path.read_text(errors="replace")
    assert job.returncode == 0, output[-6000:]
    return output


def stop_torchrun(job: subprocess.Popen) -> None:
    """End a job that is still running: SIGTERM, which torchrun passes on to its ranks (a SIGKILL
    would leave them running), then SIGKILL if it is not gone within a minute."""
    if job.poll() is None:
        job.terminate()
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()


def torchrun(script: str, args: list[str], log_path: Path, nproc: int = 2) -> str:
    """Run `script` under torchrun to the end; returns its output."""
    return wait_for_torchrun(start_torchrun(script, args, log_path, nproc), log_path)


def assert_same_tensors(a: dict, b: dict, what: str, exact: bool = False) -> None:
    """The same keys and tensors: floating ones within float rounding (bitwise with `exact`)."""
    assert a.keys() == b.keys(), what
    for name, t in a.items():
        if t.is_floating_point() and not exact:
            torch.testing.assert_close(b[name], t, rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}.{name}: {m}")
        else:
            assert torch.equal(b[name], t), f"{what}.{name}"
