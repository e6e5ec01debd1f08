"""Data-parallel training: `torchrun --nproc_per_node 2` (gloo, CPU) of each entry point gives
the weights of one process with the same global batch and seed; and the pieces that make that
exact (batch shares, gradient reduction; the hard-negative draw is in test_negatives.py)."""
import pytest
import torch

from stylegan_t2i.batch_share import BatchShare, whole_batch
from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.cli import train_ddpm, train_text_encoder
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.distributed import Distributed
from tests.torchrun_jobs import assert_same_tensors, torchrun

# Two growth stages (4x4, then an 8x8 fade-in): progressive training leaves different
# parameters unused at each stage. Global batch 8 = 2 ranks x 4 = one minibatch-std group each.
# Four steps: two at 4 px, two through the 8 px fade (the first with the lazy gradient penalty). A
# fifth step, the first at alpha = 1, turns float rounding into ~1e-3 weight differences with the
# cpu_demo critic's box down-sampling: one process with 1 thread against 2 threads differs as much
# there, so it would compare rounding, not data parallelism.
GAN_ARGS = ["--max_res", "8", "--batch", "8", "--kimg_per_stage", "0.016", "--total_kimg", "0.032",
            "--snapshot_kimg", "1", "--seed", "3", "--device", "cpu"]
DDPM_ARGS = ["--max_res", "8", "--batch", "8", "--total_kimg", "0.032", "--snapshot_kimg", "1",
             "--sample_steps", "2", "--seed", "3", "--device", "cpu"]
TEXT_ARGS = ["--steps", "6", "--batch", "16", "--resolution", "16", "--seed", "3", "--device", "cpu",
             "--no_progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    image_dir, label_dir = generate_demo_dataset(root, resolution=16, num_images=32)
    return ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]


@pytest.fixture(scope="module")
def text_encoder(data, tmp_path_factory):
    run = train_text_encoder.main(data + TEXT_ARGS + ["--out", str(tmp_path_factory.mktemp("te"))])
    return run / "text_encoder.pt"


def test_gan_two_processes_match_one(data, text_encoder, tmp_path):
    args = data + GAN_ARGS + ["--text_encoder", str(text_encoder)]
    one = train_progan.main(args + ["--out", str(tmp_path / "one")])
    torchrun("train_progan.py", args + ["--out", str(tmp_path / "two")], tmp_path / "two.log")
    two = next((tmp_path / "two").glob("*/network-final.pt"))
    ck1, ck2 = load_checkpoint(one, kinds="gan"), load_checkpoint(two, kinds="gan")
    assert ck1["progress"] == ck2["progress"] and ck1["progress"]["stage"] == 1
    for net in ("G", "D", "G_ema"):
        assert_same_tensors(ck1[net], ck2[net], net)
    assert torch.equal(ck1["rng"]["torch"], ck2["rng"]["torch"])   # Every rank drew the global batch.
    assert ck1["rng"]["sampler"] == ck2["rng"]["sampler"]
    # Only rank 0 wrote: one run directory with one log.
    assert len(list((tmp_path / "two").iterdir())) == 1


def test_ddpm_two_processes_match_one(data, text_encoder, tmp_path):
    args = data + DDPM_ARGS + ["--text_encoder", str(text_encoder)]
    one = train_ddpm.main(args + ["--out", str(tmp_path / "one")])
    torchrun("tools/train_ddpm.py", args + ["--out", str(tmp_path / "two")], tmp_path / "two.log")
    two = next((tmp_path / "two").glob("*/network-final.pt"))
    ck1, ck2 = load_checkpoint(one, kinds="ddpm"), load_checkpoint(two, kinds="ddpm")
    assert ck1["progress"] == ck2["progress"]
    for net in ("unet", "unet_ema"):
        assert_same_tensors(ck1[net], ck2[net], net)


def test_text_encoder_two_processes_match_one(data, text_encoder, tmp_path):
    torchrun("tools/train_text_encoder.py", data + TEXT_ARGS + ["--out", str(tmp_path / "two")], tmp_path / "two.log")
    one = load_checkpoint(text_encoder, kinds="text_encoder")
    two = load_checkpoint(next((tmp_path / "two").glob("*/text_encoder.pt")), kinds="text_encoder")
    assert_same_tensors(one["model"], two["model"], "model")


def test_batch_share_slices_a_global_draw():
    share = BatchShare(8, 4, 8)
    torch.manual_seed(0)
    full = torch.randn(8, 3)
    torch.manual_seed(0)
    torch.testing.assert_close(share.randn(3), full[4:])
    assert share.take(list(range(8))) == [4, 5, 6, 7] and share.size == 4
    assert whole_batch(5) == BatchShare(5, 0, 5)
    assert Distributed(rank=1, world_size=2).share(8) == share
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        Distributed(rank=0, world_size=3).share(8)


def test_reduce_gradients_flags_non_finite_loss_or_gradient():
    dist = Distributed()
    w = torch.nn.Parameter(torch.ones(3))
    (w * 2).sum().backward()
    assert dist.reduce_gradients_([w], torch.tensor(1.0))
    assert not dist.reduce_gradients_([w], torch.tensor(float("nan")))
    w.grad[1] = float("inf")
    assert not dist.reduce_gradients_([w], torch.tensor(1.0))
