"""A corrupt newest checkpoint (issue 17): truncated, empty or random bytes, as after disk trouble.

`--resume auto` (train_progan.py, tools/train_ddpm.py) and generate.py without --checkpoint
rename it to `<name>.corrupt` (bytes untouched, never over an earlier one), say so in one
warning line, and use the previous checkpoint; a checkpoint the user named stays an error.
"""
import argparse
import os
import random
import shutil

import pytest
import torch

from stylegan_t2i.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.cli import generate
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.cli.run_setup import load_resume
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.training import run_files

RES = 8
CORRUPTIONS = {
    "truncated": lambda good: good[:len(good) // 2],
    "empty": lambda good: b"",
    "random": lambda good: random.Random(17).randbytes(len(good)),
}


def _corrupt(path, how: str) -> bytes:
    """Overwrite `path` as `how` says; returns the bytes now in it."""
    bad = CORRUPTIONS[how](path.read_bytes())
    path.write_bytes(bad)
    return bad


def _snapshot(run, nimg: int, kind: str = "gan"):
    return save_checkpoint(run / run_files.snapshot_name(nimg), kind,
                           {"progress": {"nimg": nimg}, "w": torch.randn(64, 64)})


def _resume_auto(out, kind: str = "gan"):
    args = argparse.Namespace(resume="auto", out=out, finetune=None)
    return load_resume(args, kind, Distributed(), torch.device("cpu"))


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def _assert_set_aside(path, bad: bytes, err: str, name: str | None = None) -> None:
    """`path` was renamed to `name` (default `<name>.corrupt`) with its bytes, and one warning says so."""
    aside = path.with_name(name or f"{path.name}.corrupt")
    assert not path.exists() and aside.read_bytes() == bad
    warning, = [line for line in _warnings(err) if " is corrupt (" in line]
    assert warning.startswith(f"warning: {path} is corrupt (") and f"renamed it to {aside.name}" in warning


# ------------------------------------------------------------------------ choosing the checkpoint

@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_resume_auto_sets_a_corrupt_newest_snapshot_aside_and_takes_the_previous(tmp_path, capsys, how):
    run = tmp_path / "00000-demo-8"
    previous = _snapshot(run, 8)
    bad = _corrupt(_snapshot(run, 16), how)
    data, path = _resume_auto(tmp_path)
    assert path == previous and data["progress"]["nimg"] == 8
    out, err = capsys.readouterr()
    _assert_set_aside(run / run_files.snapshot_name(16), bad, err)
    assert f"resuming from {previous}" in out
    print(err, end="")  # pytest -s shows the warning line


def test_a_corrupt_final_is_tried_first_and_set_aside(tmp_path, capsys):
    """A final whose progress cannot be read ranks first, so it is set aside rather than left behind."""
    run = tmp_path / "00000-demo-8"
    newest_snapshot = _snapshot(run, 24)
    _snapshot(run, 16)
    final = save_checkpoint(run / run_files.FINAL_NAME, "gan", {"progress": {"nimg": 24}, "w": torch.randn(64, 64)})
    assert run_files.run_checkpoints(run)[:2] == [newest_snapshot, final]  # equal nimg: the snapshot first
    bad = _corrupt(final, "truncated")
    assert run_files.run_checkpoints(run)[0] == final
    assert _resume_auto(tmp_path)[1] == newest_snapshot
    _assert_set_aside(final, bad, capsys.readouterr().err)


def test_set_aside_never_clobbers_an_earlier_corrupt_file(tmp_path, capsys):
    run = tmp_path / "00000-demo-8"
    _snapshot(run, 8)
    bad = _corrupt(_snapshot(run, 16), "random")
    name = run_files.snapshot_name(16)
    (run / f"{name}.corrupt").write_bytes(b"first")
    (run / f"{name}.corrupt.1").write_bytes(b"second")
    assert _resume_auto(tmp_path)[1] == run / run_files.snapshot_name(8)
    _assert_set_aside(run / name, bad, capsys.readouterr().err, name=f"{name}.corrupt.2")
    assert (run / f"{name}.corrupt").read_bytes() == b"first"
    assert (run / f"{name}.corrupt.1").read_bytes() == b"second"


def test_no_readable_checkpoint_left_passes_the_run_over_as_if_it_had_none(tmp_path, capsys):
    older = _snapshot(tmp_path / "00000-demo-8", 8)
    bad = _corrupt(_snapshot(tmp_path / "00001-demo-8", 8), "empty")
    assert _resume_auto(tmp_path)[1] == older                        # as for a run without a checkpoint
    _assert_set_aside(tmp_path / "00001-demo-8" / run_files.snapshot_name(8), bad, capsys.readouterr().err)
    _corrupt(older, "empty")
    assert _resume_auto(tmp_path) == (None, None)
    out, err = capsys.readouterr()
    assert "no gan checkpoint" in out and "starting a new run" in out
    _assert_set_aside(older, b"", err)


def test_ddpm_resume_auto_passes_over_gan_runs_and_corrupt_files(tmp_path, capsys):
    previous = _snapshot(tmp_path / "00000-demo-ddpm-8", 8, kind="ddpm")
    _corrupt(_snapshot(tmp_path / "00000-demo-ddpm-8", 16, kind="ddpm"), "truncated")
    gan = _snapshot(tmp_path / "00001-demo-8", 8)
    assert _resume_auto(tmp_path, kind="ddpm")[1] == previous
    assert gan.is_file() and len(_warnings(capsys.readouterr().err)) == 1
    assert not list((tmp_path / "00001-demo-8").glob("*.corrupt"))


def test_a_good_checkpoint_that_cannot_be_used_stays_an_error_and_is_not_renamed(tmp_path):
    run = tmp_path / "00000-demo-8"
    _snapshot(run, 8)
    newer = run / run_files.snapshot_name(16)
    torch.save({"format": "stylegan_t2i", "version": FORMAT_VERSION + 1, "kind": "gan"}, newer)
    with pytest.raises(CheckpointError, match="newer than this code"):
        _resume_auto(tmp_path)
    assert newer.is_file() and not list(run.glob("*.corrupt*"))


def test_a_named_corrupt_checkpoint_is_an_error_and_is_not_renamed(tmp_path):
    named = _snapshot(tmp_path, 8)
    bad = _corrupt(named, "truncated")
    with pytest.raises(SystemExit, match="not a readable checkpoint") as e:
        train_progan.main(["--resume", str(named), "--out", str(tmp_path / "runs"), "--device", "cpu"])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        generate.main(["--checkpoint", str(named), "--text", "a red circle", "--out", str(tmp_path / "o.png")])
    assert named.read_bytes() == bad and not list(tmp_path.glob("*.corrupt*"))


# ------------------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny real GAN run: snapshots at 8 and 16 images, network-final.pt at 24."""
    root = tmp_path_factory.mktemp("corrupt")
    image_dir, label_dir = generate_demo_dataset(root / "data", resolution=16, num_images=32)
    data_args = ["--image_dir", str(image_dir), "--label_dir", str(label_dir), "--device", "cpu"]
    final = train_progan.main(data_args + ["--out", str(root / "runs"), "--max_res", str(RES), "--batch", "8",
                                           "--kimg_per_stage", "0.008", "--total_kimg", "0.024",
                                           "--snapshot_kimg", "0.008", "--text_encoder_steps", "4"])
    return final.parent, data_args


def _copy_run(run, runs):
    """A copy of the run under `runs` (file times kept, so 'newest' stays the same)."""
    return shutil.copytree(run, runs / run.name)


def test_resume_auto_after_a_corrupt_newest_snapshot_continues_from_the_previous_one(trained, tmp_path, capsys):
    """A run killed after its snapshot at 16 (no final yet) whose snapshot at 16 is then truncated."""
    run = _copy_run(trained[0], tmp_path)
    (run / run_files.FINAL_NAME).unlink()
    newest = run / run_files.snapshot_name(16)
    bad = _corrupt(newest, "truncated")
    capsys.readouterr()
    final = train_progan.main(trained[1] + ["--out", str(tmp_path), "--resume", "auto"])
    out, err = capsys.readouterr()
    assert f"resuming from {run / run_files.snapshot_name(8)}" in out
    assert final == run / run_files.FINAL_NAME and load_checkpoint(final, kinds="gan")["progress"]["nimg"] == 24
    warning, = [line for line in _warnings(err) if " is corrupt (" in line]
    assert warning.startswith(f"warning: {newest} is corrupt (") and f"renamed it to {newest.name}.corrupt" in warning
    assert (run / f"{newest.name}.corrupt").read_bytes() == bad      # kept through the new snapshots' pruning
    assert load_checkpoint(newest, kinds="gan")["progress"]["nimg"] == 16  # written again by the resumed run


def test_generate_sets_a_corrupt_newest_run_checkpoint_aside_and_uses_the_previous(trained, tmp_path, capsys):
    run = _copy_run(trained[0], tmp_path / "runs")
    final, previous = run / run_files.FINAL_NAME, run / run_files.snapshot_name(16)
    for age, path in enumerate(reversed(run_files.snapshots_in(run) + [final])):
        os.utime(path, (1e9 - age, 1e9 - age))                   # final newest, then 16, 8
    bad = _corrupt(final, "random")
    written = generate.main(["--runs", str(tmp_path / "runs"), "--text", "a red circle", "--n", "2",
                             "--out", str(tmp_path / "g.png")])
    out, err = capsys.readouterr()
    assert f"using checkpoint: {previous}" in out and written == [tmp_path / "g.png"]
    _assert_set_aside(final, bad, err)


def test_a_corrupt_file_that_cannot_be_renamed_is_still_passed_over(tmp_path, capsys, monkeypatch):
    run = tmp_path / "00000-demo-8"
    previous = _snapshot(run, 8)
    corrupt = run / run_files.snapshot_name(16)
    _corrupt(_snapshot(run, 16), "empty")

    def refuse(self, dest):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(corrupt), "rename", refuse)
    assert _resume_auto(tmp_path)[1] == previous
    warning, = _warnings(capsys.readouterr().err)
    assert warning.startswith(f"warning: {corrupt} is corrupt (")
    assert "could not rename it (Permission denied)" in warning
    assert corrupt.is_file()
