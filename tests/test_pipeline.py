"""The Python API (stylegan_t2i.pipeline): the shipped demo GAN and a tiny DDPM made here, through
one `TextToImage` interface; sizes, determinism by seed, nearest upscaling, option errors and the
save_pretrained round trip.

One torch thread for the whole session comes from tests/conftest.py.
"""
import numpy as np
import pytest
import torch

import stylegan_t2i.pipeline as pipeline
from stylegan_t2i import TextToImage
from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.diffusion import SchedulerConfig, UNet, UNetConfig
from stylegan_t2i.inference import DEMO_MODEL, DdpmSampler, GanSampler

PROMPTS = ["a small red circle on the left on a black background", "a large blue square in the center"]
DDPM_RES = 8


@pytest.fixture(scope="module")
def gan():
    return TextToImage.from_checkpoint(None, device="cpu")


@pytest.fixture(scope="module")
def ddpm_checkpoint(tmp_path_factory):
    """An untrained 8 px UNet with the demo model's text encoder, saved as a `ddpm` checkpoint."""
    text = load_checkpoint(DEMO_MODEL)["text_encoder"]
    cfg = UNetConfig(resolution=DDPM_RES, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(4,), context_dim=text["text_cfg"]["dim"], num_heads=4, groups=8)
    torch.manual_seed(0)
    unet = UNet(cfg)
    payload = {"config": {"unet": config_to_dict(cfg), "scheduler": config_to_dict(SchedulerConfig())},
               "unet": unet.state_dict(), "unet_ema": unet.state_dict(), "progress": {"nimg": 48, "step": 6},
               "text_encoder": text, "sample": {"prompts": PROMPTS, "seeds": [0, 1]}}
    return save_checkpoint(tmp_path_factory.mktemp("ddpm") / "network-final.pt", "ddpm", payload)


def _pixels(out):
    return [np.asarray(img) for img in out.images]


def test_demo_gan_gives_one_rgb_image_per_prompt_with_default_seeds(gan):
    assert isinstance(gan.sampler, GanSampler)
    out = gan(PROMPTS)
    assert out.seeds == [0, 1] and len(out.images) == 2
    assert all(img.mode == "RGB" and img.size == (32, 32) for img in out.images)
    single = gan(PROMPTS[0])                                    # one str prompt is one image
    assert single.seeds == [0] and np.array_equal(_pixels(single)[0], _pixels(out)[0])


def test_same_prompt_and_seed_give_the_same_pixels_whatever_the_batch(gan):
    a = _pixels(gan(PROMPTS, seeds=[5, 6]))
    b = _pixels(gan(PROMPTS[1:], seeds=[6]))
    c = _pixels(gan(PROMPTS[1:], seeds=[7]))
    assert np.array_equal(a[1], b[0]) and not np.array_equal(b[0], c[0])
    assert not np.array_equal(_pixels(gan(PROMPTS[1:], seeds=[6], truncation=0.0))[0], b[0])


def test_upscale_is_pixel_exact_nearest(gan):
    plain = _pixels(gan(PROMPTS, seeds=[3, 4]))
    big = gan(PROMPTS, seeds=[3, 4], upscale=4)
    assert all(img.size == (128, 128) for img in big.images)
    for small, large in zip(plain, _pixels(big)):
        assert np.array_equal(large, small.repeat(4, axis=0).repeat(4, axis=1))


@pytest.mark.parametrize("kwargs, fragments", [
    ({"steps": 5}, ["unknown sampling option(s) steps for a gan checkpoint", "it takes truncation"]),
    ({"truncation": "high"}, ["option truncation must be a finite number", "'high'"]),
    ({"truncation": float("nan")}, ["option truncation"]),
    ({"upscale": 0}, ["upscale must be an integer >= 1"]),
    ({"upscale": 1.5}, ["upscale must be an integer >= 1"]),
    ({"seeds": [0]}, ["one seed per prompt", "2 prompts and 1 seeds"]),
])
def test_bad_options_are_one_line_value_errors(gan, kwargs, fragments):
    with pytest.raises(ValueError) as e:
        gan(PROMPTS, **kwargs)
    assert "\n" not in str(e.value) and all(f in str(e.value) for f in fragments), str(e.value)


def test_save_pretrained_round_trip_and_model_card(gan, tmp_path):
    directory = gan.save_pretrained(tmp_path / "demo")
    assert directory == tmp_path / "demo" and (directory / "model.pt").is_file()
    expected = _pixels(gan(PROMPTS, seeds=[1, 2], truncation=0.7))
    for source in (directory, directory / "model.pt"):
        again = TextToImage.from_checkpoint(source, device="cpu")(PROMPTS, seeds=[1, 2], truncation=0.7)
        assert all(np.array_equal(a, b) for a, b in zip(expected, _pixels(again)))
    saved = load_checkpoint(directory / "model.pt", kinds="gan")
    assert set(saved) - {"format", "version", "kind"} == set(GanSampler.export_keys)
    card = (directory / "README.md").read_text()
    params = sum(p.numel() for p in gan.sampler.G.parameters())
    assert "(gan)" in card and "Kind: `gan`" in card and "32x32" in card and f"{params:,}" in card
    assert f"{gan.sampler.kimg:g} kimg" in card and f'TextToImage.from_checkpoint("{directory}")' in card


def test_missing_demo_model_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "DEMO_MODEL", tmp_path / "missing.pt")
    with pytest.raises(CheckpointError) as e:
        TextToImage.from_checkpoint(None, device="cpu")
    assert "\n" not in str(e.value) and "no demo model" in str(e.value) and "missing.pt" in str(e.value)


def test_a_ddpm_checkpoint_goes_through_the_same_api(ddpm_checkpoint, tmp_path):
    pipe = TextToImage.from_checkpoint(ddpm_checkpoint, device="cpu")
    assert isinstance(pipe.sampler, DdpmSampler) and pipe.sampler.kimg == 0.048
    out = pipe(PROMPTS, steps=2)
    assert out.seeds == [0, 1] and all(img.mode == "RGB" and img.size == (DDPM_RES,) * 2 for img in out.images)
    same = pipe(PROMPTS[1:], seeds=[1], steps=2)
    assert np.array_equal(_pixels(out)[1], _pixels(same)[0])
    ancestral = pipe(PROMPTS, steps=2, sampler="ddpm", guidance=1.0, upscale=2)
    assert all(img.size == (2 * DDPM_RES,) * 2 for img in ancestral.images)
    with pytest.raises(ValueError, match=r"unknown sampling option\(s\) truncation for a ddpm checkpoint"):
        pipe(PROMPTS, truncation=0.5)
    with pytest.raises(ValueError, match="option sampler must be 'ddim' or 'ddpm'"):
        pipe(PROMPTS, steps=2, sampler="euler")
    directory = pipe.save_pretrained(tmp_path / "ddpm")
    assert "Kind: `ddpm`" in (directory / "README.md").read_text()
    saved = load_checkpoint(directory / "model.pt", kinds="ddpm")
    assert set(saved) - {"format", "version", "kind"} == set(DdpmSampler.export_keys)    # no optimizer, no raw UNet
    again = TextToImage.from_checkpoint(directory, device="cpu")
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(out), _pixels(again(PROMPTS, steps=2))))
