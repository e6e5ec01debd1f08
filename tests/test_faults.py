"""Fault tolerance of GAN training (issue 9).

- SIGKILL: a real `train_progan.py` process killed at random moments leaves only complete,
  `weights_only`-loadable checkpoints (a write cut short leaves a hidden temporary file that
  nothing mistakes for a checkpoint), and `--resume auto` continues the same run directory from
  the newest one at exactly its kimg, stage and fade-in alpha.
- Non-finite steps: skipped (weights, optimizer state and gradients untouched) and counted in
  `Faults/nonfinite_steps`; `max_nonfinite` in a row raise `TrainingDiverged`, and the last good
  checkpoint on disk is byte-identical afterwards.

One torch thread for the whole session comes from tests/conftest.py; the training subprocess
gets OMP_NUM_THREADS=1 (and inherits this process's niceness).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stylegan_t2i.checkpoint import load_checkpoint, save_checkpoint
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.data import ImageLabelDataset, IndexOrder
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.gan.schedule import ProgressiveSchedule, ScheduleConfig
from stylegan_t2i.gan.trainer import GanTrainConfig, GanTrainer
from stylegan_t2i.models import cpu_demo_configs
from stylegan_t2i.models.critic import Critic
from stylegan_t2i.models.generator import Generator
from stylegan_t2i.text.pretrain import PretrainConfig, load_text_encoder, pretrain_text_encoder, save_text_encoder
from stylegan_t2i.training import loop, run_files
from stylegan_t2i.training.faults import TrainingDiverged

REPO = Path(__file__).resolve().parents[1]
RES, BATCH = 8, 8
# 4x4 for 16 images, the 8x8 fade-in over the next 16, then 8x8 at alpha = 1; a snapshot every
# step (8 images), so kills land before, during and after checkpoint writes at every phase.
TINY = ["--max_res", str(RES), "--batch", str(BATCH), "--kimg_per_stage", "0.016", "--snapshot_kimg", "0.008",
        "--seed", "3", "--device", "cpu"]
# One kill per round, each in its own run: (wait until a snapshot of at least this many images
# exists, then kill "delay": after a random part of a step, "write": as soon as the temporary file
# of the next checkpoint appears, i.e. in the middle of its write). Resumes then start at 4x4,
# in the middle of the 8x8 fade-in, and at 8x8 with alpha = 1.
KILLS = ((8, "delay"), (24, "delay"), (40, "write"))
STEP_S = 0.25               # a step + snapshot takes ~0.2 s idle
START_TIMEOUT_S = 90.0      # import + dataset + the steps before a kill (~4 s idle)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """48 demo images, their image cache at RES (built here, read by every run), and a text
    encoder pretrained on them for 8 steps, so no run pretrains its own."""
    root = tmp_path_factory.mktemp("demo")
    image_dir, label_dir = generate_demo_dataset(root, resolution=16, num_images=48)
    dataset = ImageLabelDataset(image_dir, label_dir, RES, verbose=False)
    cfg = PretrainConfig(resolution=RES, steps=8, warmup=2, seed=3)
    bundle = pretrain_text_encoder(dataset, cfg, "cpu", progress=False)
    encoder = save_text_encoder(root / "text_encoder.pt", bundle, cfg)
    return {"image_dir": image_dir, "label_dir": label_dir, "encoder": encoder,
            "args": ["--image_dir", str(image_dir), "--label_dir", str(label_dir), "--text_encoder", str(encoder)]}


# ---------------------------------------------------------------------------------------- SIGKILL

def _start_training(args: list[str], out: Path, log_path: Path) -> subprocess.Popen:
    """`python train_progan.py` for (practically) ever, output to a file: a pipe nobody reads
    would fill up and stall the child."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "train_progan.py"), *args, "--out", str(out), "--total_kimg", "1000"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(proc: subprocess.Popen, log_path: Path, found, poll_s: float):
    """Poll `found()` until it returns something; fail if the training process ends first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        result = found()
        if result:
            return result
        if proc.poll() is not None:
            pytest.fail(f"training exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        time.sleep(poll_s)
    proc.kill()
    proc.wait()
    pytest.fail(f"training did not get there within {START_TIMEOUT_S:g} s:\n{log_path.read_text()[-3000:]}")


def _kill_at(proc: subprocess.Popen, out: Path, log_path: Path, nimg: int, how: str, rng: random.Random) -> Path:
    """SIGKILL the run once it has a snapshot of >= `nimg` images, as `how` says (see KILLS);
    returns the run directory."""
    def run_with_snapshot() -> Path | None:
        for snap in out.glob("*/network-snapshot-*.pt"):
            match = run_files.SNAPSHOT_PATTERN.match(snap.name)
            if match and int(match.group(1)) >= nimg:
                return snap.parent
        return None

    run = _wait_for(proc, log_path, run_with_snapshot, poll_s=0.01)
    if how == "delay":
        time.sleep(rng.uniform(0.0, STEP_S))
    else:
        _wait_for(proc, log_path, lambda: list(run.glob(".network-*.tmp")), poll_s=0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, log_path.read_text()[-3000:]
    return run


def _check_checkpoints(run: Path) -> tuple[Path, dict]:
    """Every network-*.pt of `run` loads as plain data and is what its name says; temporary
    files of a cut-short write are hidden and unmatched; `--resume auto` would pick the newest.
    Returns (newest checkpoint, its progress)."""
    progress = {}
    for path in run.glob("network-*.pt"):
        ck = load_checkpoint(path, kinds="gan")           # weights_only=True inside
        assert path.name == run_files.snapshot_name(ck["progress"]["nimg"]), path.name
        assert all(torch.isfinite(t).all() for t in ck["G_ema"].values() if t.is_floating_point())
        progress[path] = ck["progress"]
    assert progress, f"no checkpoint left in {run}"
    for leftover in run.glob("*.tmp"):                 # atomic_torch_save's temp file, if the kill hit a write
        assert leftover.name.startswith(".") and not run_files.SNAPSHOT_PATTERN.match(leftover.name)
    by_nimg = sorted(progress, key=lambda p: progress[p]["nimg"])
    assert run_files.snapshots_in(run) == by_nimg
    assert next(run_files.auto_resume_candidates(run.parent, kind="gan")) == by_nimg[-1]
    return by_nimg[-1], progress[by_nimg[-1]]


def _record_loaded_progress(monkeypatch) -> list[dict]:
    """Make GanTrainer.load_payload also note the trainer's progress right after loading."""
    loaded = []
    real_load = GanTrainer.load_payload

    def load_and_record(self, payload):
        real_load(self, payload)
        phase = self.schedule.at(self.nimg)
        loaded.append({"nimg": self.nimg, "stage": phase.stage, "alpha": phase.alpha, "step": self.step})

    monkeypatch.setattr(GanTrainer, "load_payload", load_and_record)
    return loaded


def test_sigkill_leaves_loadable_checkpoints_and_resume_auto_continues(data, tmp_path, monkeypatch):
    rng = random.Random(2026)
    loaded = _record_loaded_progress(monkeypatch)
    for round_, (nimg, how) in enumerate(KILLS):
        out = tmp_path / f"kill{round_}"
        log_path = tmp_path / f"kill{round_}.log"
        run = _kill_at(_start_training(data["args"] + TINY, out, log_path), out, log_path, nimg, how, rng)

        newest, progress = _check_checkpoints(run)
        loaded.clear()
        total_kimg = (progress["nimg"] + BATCH) / 1000      # one step more than the checkpoint
        final = train_progan.main(data["args"] + TINY + ["--out", str(out), "--resume", "auto",
                                                         "--total_kimg", repr(total_kimg)])
        assert loaded == [progress], f"round {round_}: resumed at {loaded}, newest checkpoint {newest.name}"
        assert final == run / run_files.FINAL_NAME          # same run directory, continued
        assert load_checkpoint(final, kinds="gan")["progress"]["nimg"] == progress["nimg"] + BATCH
        assert not list(run.glob(".network-*.tmp")), "partial writes of the killed run were not cleaned up"
        # log.jsonl lines are whole even when the kill came mid-run (one flushed write per record).
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert records[-1]["Progress/kimg"] == pytest.approx(total_kimg)


def test_resume_auto_prefers_a_newer_snapshot_over_an_older_final(tmp_path):
    run = tmp_path / "00000-demo-8"
    save_checkpoint(run / run_files.FINAL_NAME, "gan", {"progress": {"nimg": 16}})    # the first run ended here
    save_checkpoint(run / run_files.snapshot_name(24), "gan", {"progress": {"nimg": 24}})  # extension, then killed
    assert next(run_files.auto_resume_candidates(tmp_path, kind="gan")) == run / run_files.snapshot_name(24)


# ------------------------------------------------------------------------------- non-finite steps

def _tiny_trainer(data, run_dir: Path | None, **train_cfg) -> GanTrainer:
    """A GanTrainer on the cpu_demo networks at RES with the module's text encoder."""
    bundle = load_text_encoder(data["encoder"])
    dataset = ImageLabelDataset(data["image_dir"], data["label_dir"], RES, verbose=False)
    g_cfg, d_cfg = cpu_demo_configs(bundle.text_cfg.embed_dim, max_res=RES)
    schedule = ProgressiveSchedule(ScheduleConfig(max_res=RES, total_kimg=1.0, stable_kimg=0.016,
                                                  fade_kimg=0.016, batch=BATCH))
    torch.manual_seed(0)
    return GanTrainer(Generator(g_cfg), Critic(d_cfg), bundle, dataset, IndexOrder(len(dataset)), schedule,
                      GanTrainConfig(**train_cfg), run_dir, torch.device("cpu"), ["a red circle"], {}, progress=False)


def _state(module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Clones of the weights and of the optimizer's per-parameter tensors."""
    state = {f"w.{k}": v.clone() for k, v in module.state_dict().items()}
    for pid, s in opt.state_dict()["state"].items():
        state.update({f"opt.{pid}.{k}": torch.as_tensor(v).clone() for k, v in s.items()})
    return state


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_gan_steps_are_skipped_counted_and_stop_training(data, monkeypatch):
    trainer = _tiny_trainer(data, None, max_nonfinite=3)
    phase = trainer.schedule.at(0)
    share = trainer.dist.share(phase.batch)
    reals, captions = trainer.next_reals(phase, share)
    step_text = trainer.step_text(captions, share)
    d_before, g_before = _state(trainer.D, trainer.opt_D), _state(trainer.G, trainer.opt_G)

    nan_reals = torch.full_like(reals, float("nan"))
    for _ in range(2):                                   # 2 < max_nonfinite: skipped, not fatal
        trainer.critic_step(phase, share, nan_reals, step_text)
    assert _same(_state(trainer.D, trainer.opt_D), d_before)
    assert all(p.grad is None for p in trainer.D.parameters())  # no NaN gradient left for a later step
    trainer.critic_step(phase, share, reals, step_text)  # a good step resets the count ...
    assert not _same(_state(trainer.D, trainer.opt_D), d_before)

    critic_forward = trainer.D.forward                   # a critic scoring NaN (still on the graph)
    monkeypatch.setattr(trainer.D, "forward", lambda *args: critic_forward(*args) * float("nan"))
    for _ in range(2):
        trainer.generator_step(phase, share, step_text)
    assert _same(_state(trainer.G, trainer.opt_G), g_before)
    assert trainer.stats.flush()["Faults/nonfinite_steps"] == 4

    with pytest.raises(TrainingDiverged, match="3 non-finite losses or gradients in a row") as failure:
        trainer.generator_step(phase, share, step_text)       # ... so only the third bad one in a row stops
    assert "\n" not in str(failure.value) and "--resume" in str(failure.value)
    assert _same(_state(trainer.G, trainer.opt_G), g_before)


def test_divergence_in_fit_never_overwrites_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    """Snapshots at 8 and 16 images are good; then G's weights become NaN (as after a blown-up
    update): the snapshot at 24 is refused, and the third non-finite step stops `fit`."""
    trainer = _tiny_trainer(data, tmp_path, max_nonfinite=3, snapshot_kimg=0.008)
    written = {}
    real_snapshot = trainer.snapshot

    def snapshot_then_poison(final=False):
        path = real_snapshot(final)
        if path is not None:
            written[path] = path.read_bytes()
        if trainer.nimg == 16:
            with torch.no_grad():
                for p in trainer.G.parameters():
                    p.fill_(float("nan"))
        return path

    monkeypatch.setattr(trainer, "snapshot", snapshot_then_poison)
    with pytest.raises(TrainingDiverged, match="3 non-finite losses or gradients in a row at kimg 0.0") as failure:
        trainer.fit(total_kimg=1.0)
    assert "last good checkpoint is untouched" in str(failure.value)
    assert "checkpoint NOT written" in capsys.readouterr().out
    assert trainer.nimg == 24
    assert sorted(p.name for p in written) == [run_files.snapshot_name(8), run_files.snapshot_name(16)]
    assert sorted(tmp_path.glob("network-*.pt")) == sorted(written)      # no NaN snapshot, no final
    for path, data_bytes in written.items():
        assert path.read_bytes() == data_bytes, f"{path.name} was rewritten"
    ck = load_checkpoint(tmp_path / run_files.snapshot_name(16), kinds="gan")
    assert ck["progress"]["nimg"] == 16
    assert all(torch.isfinite(t).all() for net in ("G", "G_ema", "D") for t in ck[net].values()
               if t.is_floating_point())
    trainer.log.close()


def test_ema_half_life_counts_every_critic_batch(data, monkeypatch):
    """With n_critic = 2 one G step follows 2 batches of reals: the EMA decay of that step is
    for 2 batches of images, so the half-life stays in images."""
    trainer = _tiny_trainer(data, None, n_critic=2, ema_rampup=None, ema_kimg=0.1)
    betas = []
    monkeypatch.setattr(loop, "update_ema", lambda ema, net, beta: betas.append(beta))
    trainer.fit(total_kimg=2 * BATCH / 1000)
    assert betas == [pytest.approx(0.5 ** (2 * BATCH / 100))]


def test_lazy_gradient_penalty_runs_every_interval_with_its_weight_scaled(data, monkeypatch):
    import stylegan_t2i.gan.trainer as gan_trainer
    trainer = _tiny_trainer(data, None, gp_interval=3, n_critic=2)
    pattern = []
    for trainer.step in range(3):
        pattern += [trainer.regularize_now(i) for i in range(2)]
    assert pattern == [True, False, False, True, False, False]   # critic steps 0 and 3 of 0..5
    weights = []
    real_penalty = gan_trainer.gradient_penalty
    monkeypatch.setattr(gan_trainer, "gradient_penalty",
                        lambda *a, weight, **k: weights.append(weight) or real_penalty(*a, weight=weight, **k))
    phase = trainer.schedule.at(0)
    share = trainer.dist.share(phase.batch)
    reals, captions = trainer.next_reals(phase, share)
    step_text = trainer.step_text(captions, share)
    trainer.critic_step(phase, share, reals, step_text, regularize=False)
    assert weights == [] and "Loss/D/gp" not in trainer.stats.flush()
    trainer.critic_step(phase, share, reals, step_text, regularize=True)
    assert weights == [3 * trainer.cfg.gp_weight]
    logged = trainer.stats.flush()
    assert logged["Loss/D/gp"] > 0 and logged["Critic/grad_norm"] > 0


def test_reals_fade_in_through_the_generators_up_sampling(data):
    """While a block fades in, the reals' low-resolution part is up-sampled with the generator's
    kernel, as G's own image is: at alpha = 0 with the cpu_demo nearest kernel, exact 2x2 blocks."""
    trainer = _tiny_trainer(data, None)
    assert trainer.G.cfg.resample_kernel == (0, 1, 1, 0)
    phase = trainer.schedule.at(16)                      # the first image of the 8x8 fade-in
    assert (phase.stage, phase.alpha) == (1, 0.0)
    reals, _ = trainer.next_reals(phase, trainer.dist.share(phase.batch))
    blocks = reals[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(reals, blocks)
