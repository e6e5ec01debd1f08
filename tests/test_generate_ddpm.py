"""generate.py on a tiny DDPM checkpoint trained in the test: grids, determinism by seed, DDPM and
DDIM samplers, img2img, errors; each checkpoint's sampler rejects the flags of the other kind.

One torch thread for the whole session comes from tests/conftest.py.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.cli import generate, train_ddpm
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.images import save_png
from stylegan_t2i.inference import DdpmSampler, load_sampler

RES = 8
PROMPT = "a small red circle on the left on a black background"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    image_dir, label_dir = generate_demo_dataset(tmp_path_factory.mktemp("data"), resolution=16, num_images=32)
    return ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """Four training steps: enough to make ε depend on the caption, the timestep and the image."""
    return train_ddpm.main(data + ["--out", str(tmp_path_factory.mktemp("runs")), "--max_res", str(RES),
                                   "--batch", "8", "--lr", "1e-3", "--total_kimg", "0.032",
                                   "--sample_steps", "2", "--text_encoder_steps", "4", "--device", "cpu"])


def _png(path):
    return np.asarray(Image.open(path)).astype(np.int16)


def _gen(trained, out, *extra):
    generate.main(["--checkpoint", str(trained), "--text", PROMPT, "--steps", "5", "--out", str(out),
                   "--size", "0", *extra])
    return _png(out)


def _cell(grid, col):
    return grid[2:2 + RES, 2 + col * (RES + 2):2 + col * (RES + 2) + RES]


def test_loads_as_ddpm_sampler_and_writes_a_prompt_by_seed_grid(trained, tmp_path):
    sampler = load_sampler(trained)
    assert isinstance(sampler, DdpmSampler) and sampler.resolution == RES and sampler.kimg == 0.032
    out = tmp_path / "g.png"
    generate.main(["--checkpoint", str(trained), "--text", "a red circle", "--text", "a blue square",
                   "--n", "3", "--steps", "10", "--out", str(out), "--size", "0"])
    assert _png(out).shape == (2 * (RES + 2) + 2, 3 * (RES + 2) + 2, 3)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_same_seed_same_image_other_seed_differs_whatever_the_batch(trained, tmp_path, sampler):
    flags = ["--sampler", sampler, "--steps", "10"]
    a = _gen(trained, tmp_path / "a.png", "--seeds", "5", *flags)
    b = _gen(trained, tmp_path / "b.png", "--seeds", "5", *flags)
    c = _gen(trained, tmp_path / "c.png", "--seeds", "6", *flags)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Seed 5 in a batch with others and with batch size 2: the same image, up to float rounding
    # of batched matmuls (at most one uint8 level).
    many = _gen(trained, tmp_path / "many.png", "--seeds", "4-6", "--batch", "2", *flags)
    assert np.abs(_cell(many, 1) - _cell(a, 0)).max() <= 1


def test_ddpm_and_ddim_differ_and_eta_adds_noise(trained, tmp_path):
    ddim = _gen(trained, tmp_path / "ddim.png", "--seeds", "1")
    ddpm = _gen(trained, tmp_path / "ddpm.png", "--seeds", "1", "--sampler", "ddpm")
    eta = _gen(trained, tmp_path / "eta.png", "--seeds", "1", "--eta", "1")
    assert not np.array_equal(ddim, ddpm) and not np.array_equal(ddim, eta)


def test_guidance_changes_the_image(trained, tmp_path):
    # Compared as float images: after 4 training steps the differences are below one uint8 level.
    sampler = load_sampler(trained)
    kw = dict(captions=[PROMPT], seeds=[3], steps=5)
    plain, guided = sampler.sample(guidance=1.0, **kw), sampler.sample(guidance=3.0, **kw)
    assert not torch.equal(plain, guided)


def test_img2img_strength_zero_returns_the_init_image(trained, tmp_path):
    rng = np.random.default_rng(0)
    init = tmp_path / "init.png"
    save_png(init, rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8))
    same = _gen(trained, tmp_path / "s0.png", "--seeds", "2", "--init_image", str(init), "--strength", "0")
    assert np.array_equal(_cell(same, 0), _png(init))
    half = _gen(trained, tmp_path / "s5.png", "--seeds", "2", "--init_image", str(init), "--strength", "0.5")
    again = _gen(trained, tmp_path / "s5b.png", "--seeds", "2", "--init_image", str(init), "--strength", "0.5")
    full = _gen(trained, tmp_path / "s1.png", "--seeds", "2", "--init_image", str(init), "--strength", "1")
    assert np.array_equal(half, again) and not np.array_equal(_cell(half, 0), _png(init))
    # Strength 1 starts from the seed's noise at t = T-1 (sqrt(ᾱ) x0 ≈ 0.006 x0): like plain sampling.
    plain = _gen(trained, tmp_path / "plain.png", "--seeds", "2")
    assert np.abs(full - plain).max() <= np.abs(half - plain).max()


def _one_line_error(argv, *fragments):
    with pytest.raises(SystemExit) as e:
        generate.main(argv)
    msg = str(e.value)
    assert msg.startswith("error: ") and "\n" not in msg and all(f in msg for f in fragments), msg


def test_errors_and_rejected_truncation(trained, tmp_path):
    ck = ["--checkpoint", str(trained), "--out", str(tmp_path / "o.png")]
    _one_line_error(ck + ["--text", PROMPT, "--init_image", str(tmp_path / "missing.png")], "cannot read --init_image")
    _one_line_error(ck + ["--interpolate", "a red circle", "a blue square"], "--interpolate needs a GAN checkpoint")
    _one_line_error(ck + ["--text", PROMPT, "--strength", "1.5"], "option strength", "[0, 1]", "1.5")
    _one_line_error(ck + ["--text", PROMPT, "--steps", "0"], "option steps", ">= 1")
    _one_line_error(ck + ["--text", PROMPT, "--steps", "1001"], "at most the 1000 training timesteps")
    _one_line_error(ck + ["--text", PROMPT, "--eta", "-1"], "option eta")
    _one_line_error(ck + ["--text", PROMPT, "--truncation", "0.5"],
                    "unknown sampling option(s) truncation for a ddpm checkpoint", "steps, guidance, sampler")


def test_gan_checkpoint_rejects_the_diffusion_flags(data, trained, tmp_path):
    final = train_progan.main(data + ["--out", str(tmp_path / "runs"), "--max_res", "8", "--batch", "4",
                                      "--kimg_per_stage", "0.004", "--total_kimg", "0.004", "--device", "cpu",
                                      "--text_encoder", str(trained.parent / "text_encoder.pt")])
    args = ["--checkpoint", str(final), "--text", PROMPT, "--seeds", "0-1", "--out", str(tmp_path / "g.png")]
    _one_line_error(args + ["--steps", "7", "--guidance", "5"],
                    "unknown sampling option(s) steps, guidance for a gan checkpoint; it takes truncation")
    assert not (tmp_path / "g.png").exists()
    generate.main(args + ["--truncation", "0.5", "--size", "0"])
    assert _png(tmp_path / "g.png").shape == (RES + 4, 2 * (RES + 2) + 2, 3)
