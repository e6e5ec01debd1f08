"""TrainLoop, the run loop the GAN and DDPM trainers share, on a toy family: log and snapshot
cadences, the final log record, resume from the payload, interrupt, the optimizer step."""
import copy
import os
import signal

import pytest
import torch

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.run_log import read_log
from stylegan_t2i.training import loop, run_files
from stylegan_t2i.training.faults import TrainingDiverged
from stylegan_t2i.training.loop import LoopConfig, TrainLoop, crossed

BATCH = 4


class Stream:
    """Dataset and data order at once: an endless count with a resumable position."""

    def __init__(self):
        self.pos = 0

    def __iter__(self):
        while True:
            self.pos += 1
            yield self.pos

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


class ZeroSampler:
    def sample(self, captions, seeds):
        return torch.zeros(len(captions), 3, 4, 4)


class Toy(TrainLoop):
    """One linear layer regressing 0; `bad_steps`: iterations (0-based) whose loss is NaN;
    `signal_at`: SIGTERM to this process during the iteration that starts at this nimg."""
    KIND = "ddpm"        # a kind the checkpoint module knows

    def __init__(self, run_dir, bad_steps=(), signal_at=None, **cfg):
        stream = Stream()
        super().__init__(None, stream, stream, LoopConfig(**cfg), run_dir, torch.device("cpu"), ["a", "b"],
                         {"toy": {}}, False, Distributed())
        torch.manual_seed(0)
        self.net = torch.nn.Linear(2, 1)
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.bad_steps, self.signal_at = set(bad_steps), signal_at

    def train_iteration(self):
        x = torch.full((BATCH, 2), float(next(self._indices)))
        loss = self.net(x).square().mean() * (float("nan") if self.step in self.bad_steps else 1.0)
        self.stats.add({"Loss/toy": loss})
        self._apply(self.opt, loss, grad_clip=1.0)
        if self.nimg == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        self.nimg += BATCH
        return BATCH

    def checkpointed(self):
        return {"net": self.net, "net_ema": self.net_ema, "opt": self.opt}

    def ema_networks(self):
        return self.net_ema, self.net

    def grid_sampler(self):
        return ZeroSampler(), {}

    def log_tick(self, values, img_per_s):
        values["LR"] = self.opt.param_groups[0]["lr"]
        return f"{img_per_s:.0f}img/s"


@pytest.fixture(autouse=True)
def no_text_encoder(monkeypatch):
    monkeypatch.setattr(loop, "text_encoder_payload", lambda bundle: {})


def test_crossed():
    assert crossed(8, 4, 0.008) and not crossed(12, 4, 0.008) and crossed(10, 4, 0.008)
    assert crossed(5, 1, 0.0)     # every image when the cadence is below one image


def test_cadences_final_record_and_resume(tmp_path):
    toy = Toy(tmp_path, log_kimg=0.008, snapshot_kimg=0.008, keep_snapshots=1)
    final = toy.fit(total_kimg=0.016)
    assert final == tmp_path / run_files.FINAL_NAME
    # The run ended on a log tick: no second, empty record at 16 images.
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [8, 16]
    assert [p.name for p in run_files.snapshots_in(tmp_path)] == [run_files.snapshot_name(8)]
    assert (tmp_path / "samples" / "fakes000000.png").is_file()
    ck = load_checkpoint(final, kinds="ddpm")
    assert ck["progress"] == {"nimg": 16, "step": 4} and ck["sample"] == {"prompts": ["a", "b"], "seeds": list(range(8))}
    assert {"config", "net", "net_ema", "opt", "rng", "text_encoder"} <= set(ck)

    again = Toy(tmp_path, log_kimg=0.008, snapshot_kimg=0.008, keep_snapshots=1)
    again.load_payload(ck)
    assert again.nimg == 16 and again.step == 4 and again.order.pos == 4
    assert torch.equal(again.net.weight, toy.net.weight) and torch.equal(again.net_ema.weight, toy.net_ema.weight)
    again.fit(total_kimg=0.020)     # 16 -> 20: no tick crossed, so the final record is written
    records = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == [8, 16, 20]
    assert {"Loss/toy", "Progress/kimg", "Speed/img_per_s", "Speed/sec_per_kimg", "LR", "Grad/norm"} <= set(records[-1])
    assert load_checkpoint(final, kinds="ddpm")["progress"] == {"nimg": 20, "step": 5}


def test_a_signal_stops_after_the_step_with_a_snapshot(tmp_path, capsys):
    toy = Toy(tmp_path, signal_at=2 * BATCH)
    assert toy.fit(total_kimg=1.0) is None
    assert "interrupted by SIGTERM at kimg 0.01" in capsys.readouterr().out
    assert run_files.run_checkpoints(tmp_path) == [tmp_path / run_files.snapshot_name(3 * BATCH)]
    assert [r["step"] for r in read_log(tmp_path / "log.jsonl")] == [3 * BATCH]


def test_nonfinite_steps_are_skipped_counted_and_stop():
    toy = Toy(None, bad_steps={1, 2, 4, 5, 6}, max_nonfinite=3)
    with pytest.raises(TrainingDiverged, match="3 non-finite losses or gradients in a row"):
        toy.fit(total_kimg=1.0)
    assert toy.step == 6 and toy.nimg == 6 * BATCH      # raised inside the 7th iteration
    assert toy.stats.flush()["Faults/nonfinite_steps"] == 4  # steps 1, 2, 4, 5; a good step 3 reset the count
