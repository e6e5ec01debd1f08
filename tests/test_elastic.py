"""Elastic restart (issue 17): under `torchrun --max-restarts 1 ... --resume auto`, a rank killed
with SIGKILL in the middle of a checkpoint write makes torchrun restart the group, which goes on
from the newest complete checkpoint, in the same run directory, to the end: with the weights of
an uninterrupted run (the same world size) from that checkpoint on."""
import os
import shutil
import signal
import time
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch.distributed import PrefixStore, TCPStore

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.cli.run_setup import load_resume, run_directory
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.distributed import Distributed, round_store
from stylegan_t2i.training import run_files
from tests.torchrun_jobs import assert_same_tensors, start_torchrun, stop_torchrun, wait_for_torchrun

# One stage at 4x4; a snapshot every 2 steps of 8 images (4 per rank), the final at 48 images.
# The encoder's pretraining is 2 steps, in the first group only: a resumed run takes its checkpoint's.
ARGS = ["--max_res", "4", "--batch", "8", "--total_kimg", "0.048", "--snapshot_kimg", "0.016",
        "--text_encoder_steps", "2", "--seed", "3", "--device", "cpu"]
KILL_TIMEOUT_S = 300.0      # Start-up (imports on a busy machine) and the steps up to the kill.


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    image_dir, label_dir = generate_demo_dataset(tmp_path_factory.mktemp("demo"), resolution=8, num_images=16)
    return ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]


def _workers(launcher_pid: int) -> dict[tuple[int, int], int]:
    """(restart count, rank) -> pid of torchrun's worker processes (its children)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            env = dict(kv.split("=", 1) for kv in (stat.parent / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, IndexError, ValueError):    # It ended while being read.
            continue
        if "RANK" in env:
            found[int(env.get("TORCHELASTIC_RESTART_COUNT", 0)), int(env["RANK"])] = int(stat.parent.name)
    return found


def _kill_rank_mid_write(job, log_path: Path, out: Path, rank: int) -> Path:
    """SIGKILL the first group's `rank` as soon as a checkpoint write follows the first snapshot:
    when its temporary file appears (or, should a busy machine make the poll miss that, when the
    next snapshot does). Returns the newest complete checkpoint once that rank is dead."""
    def run_writing_again() -> Path | None:
        for first in out.glob(f"*/{run_files.snapshot_name(16)}"):
            if list(first.parent.glob(".*.tmp")) or len(run_files.snapshots_in(first.parent)) > 1:
                return first.parent
        return None

    deadline = time.monotonic() + KILL_TIMEOUT_S
    while (run := run_writing_again()) is None:
        if job.poll() is not None or time.monotonic() > deadline:
            stop_torchrun(job)
            pytest.fail(f"no checkpoint write after the first snapshot to kill in (torchrun ended with "
                        f"{job.returncode}):\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.001)
    pid = _workers(job.pid)[0, rank]
    os.kill(pid, signal.SIGKILL)
    while _state(pid) not in ("Z", None):     # A zombie until torchrun reaps it: it writes nothing more.
        time.sleep(0.001)
    return run_files.run_checkpoints(run)[0]


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the ranks in /proc")
def test_killed_rank_restarts_the_group_which_resumes_the_newest_complete_checkpoint(data, tmp_path):
    out, log = tmp_path / "elastic", tmp_path / "elastic.log"
    job = start_torchrun("train_progan.py", data + ARGS + ["--out", str(out), "--resume", "auto"], log,
                         launcher=("--max-restarts", "1"))
    newest = _kill_rank_mid_write(job, log, out, rank=0)     # Rank 0 writes the checkpoints.
    # The reference: the same world size from a copy of that checkpoint, alongside the restarted group.
    start, ref_log = shutil.copy(newest, tmp_path / "start.pt"), tmp_path / "reference.log"
    reference = start_torchrun("train_progan.py", data + ARGS + ["--out", str(tmp_path / "reference"),
                                                                 "--resume", str(start)], ref_log)
    try:
        output = wait_for_torchrun(job, log)
    except BaseException:
        stop_torchrun(reference)
        raise
    wait_for_torchrun(reference, ref_log)

    assert newest.name in {run_files.snapshot_name(16), run_files.snapshot_name(32)}
    assert f"resuming from {newest}" in output, output[-3000:]      # The restarted group's rank 0.
    run = newest.parent
    assert [p.name for p in out.iterdir()] == [run.name]            # One run, one directory.
    assert not list(run.glob(".*.tmp")), "the killed write's temporary file was not cleaned up"
    final = load_checkpoint(run / run_files.FINAL_NAME, kinds="gan")
    expected = load_checkpoint(next((tmp_path / "reference").glob(f"*/{run_files.FINAL_NAME}")), kinds="gan")
    assert final["progress"] == expected["progress"] and final["progress"]["nimg"] == 48
    for part in ("G", "D", "G_ema", "opt_G", "opt_D"):
        assert_same_tensors(_tensors(expected[part]), _tensors(final[part]), part, exact=True)
    assert torch.equal(final["rng"]["torch"], expected["rng"]["torch"])
    assert final["rng"]["sampler"] == expected["rng"]["sampler"]


def _tensors(state: dict, prefix: str = "") -> dict:
    """The tensors of a (nested) state dict, by dotted key."""
    found = {}
    for key, value in state.items():
        if isinstance(value, dict):
            found.update(_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            found[f"{prefix}{key}"] = value
    return found


def test_a_restarted_group_joins_in_a_key_space_the_one_before_never_wrote():
    """The previous group's keys are still in torchrun's store (a token of rank 1's, rank 0's
    address): the new group agrees on a fresh prefix that shows none of them."""
    timeout = timedelta(seconds=30)
    server = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timeout)
    server.set("stylegan_t2i/token/1", "from-the-dead-group")
    old = PrefixStore("stylegan_t2i/old", server)
    old.set("rank_0", "127.0.0.1:1")

    def join(rank: int):    # Each rank is a process with its own connection.
        return round_store(TCPStore("127.0.0.1", server.port, is_master=False, timeout=timeout), rank, 2, timeout)
    with ThreadPoolExecutor(2) as pool:
        joined = list(pool.map(join, (0, 1)))
    assert not joined[1].check(["rank_0"])
    joined[0].set("rank_0", "127.0.0.1:2")
    assert joined[1].get("rank_0") == b"127.0.0.1:2"
    assert not joined[1].check(["stylegan_t2i/token/1"])
    assert old.get("rank_0") == b"127.0.0.1:1"


def test_resume_auto_restarts_a_run_without_checkpoints_in_its_own_directory(tmp_path):
    auto, fresh = Namespace(resume="auto", out=tmp_path), Namespace(resume=None, out=tmp_path)
    first = run_directory(auto, None, "images-4")
    assert first.name == "00000-images-4"
    assert run_directory(auto, None, "images-4") == first           # It died before a checkpoint.
    assert run_directory(fresh, None, "images-4").name == "00001-images-4"
    assert run_directory(auto, None, "images-8").name == "00002-images-8"   # Another run's name.
    snapshot = tmp_path / "00002-images-8" / run_files.snapshot_name(16)
    snapshot.write_bytes(b"")
    assert run_directory(auto, snapshot, "images-8") == snapshot.parent
    assert run_directory(auto, None, "images-8").name == "00003-images-8"   # The newest holds one.


def test_restarts_without_resume_auto_are_warned_about(tmp_path, capsys):
    args = Namespace(resume=None, out=tmp_path, finetune=None)
    assert load_resume(args, "gan", Distributed(max_restarts=1), torch.device("cpu")) == (None, None)
    assert "warning: torchrun --max-restarts without --resume auto" in capsys.readouterr().err
    load_resume(Namespace(resume="auto", out=tmp_path, finetune=None), "gan", Distributed(max_restarts=1), torch.device("cpu"))
    assert "warning" not in capsys.readouterr().err
