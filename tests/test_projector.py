"""The GAN projector (stylegan_t2i/projector.py) and its CLI (tools/project.py): on the shipped
demo model, and on a tiny random generator with a caption part that shares its text encoder."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i import projector as P
from stylegan_t2i.cli import project as project_cli
from stylegan_t2i.data.demo_scenes import caption_for, render_scene
from stylegan_t2i.inference import DEMO_MODEL, GanSampler, load_sampler, seeded_normal
from stylegan_t2i.metrics.attribute_classifier import pil_to_img
from stylegan_t2i.models.generator import Generator, GeneratorConfig

SCENE = {"shape": "triangle", "colour": "blue", "size": "large", "position": "center", "background": "gray"}
CAPTION = caption_for(SCENE)


@pytest.fixture(scope="module")
def demo():
    return load_sampler(DEMO_MODEL, "cpu")


def tiny_sampler(demo, architecture="skip", text_w_dim=16, stage=2, alpha=1.0):
    """A random 16 px generator on the demo's text encoder, with noise strengths that matter."""
    torch.manual_seed(0)
    cfg = GeneratorConfig(text_dim=demo.G.cfg.text_dim, max_res=16, z_dim=16, z_embed_dim=8, text_embed_dim=16,
                          w_dim=32, mapping_layers=2, text_w_dim=text_w_dim, architecture=architecture,
                          channel_base=128, channel_max=16, mapping_lr_mult=1.0)
    G = Generator(cfg)
    with torch.no_grad():
        for m in P.noise_layers(G, stage).values():
            m.strength.fill_(0.5)
    return GanSampler(G, demo.text, stage, alpha, "cpu")


@pytest.fixture(scope="module")
def target():
    return pil_to_img([render_scene(SCENE, 32)])


def test_encoder_features_end_in_the_image_towers_embedding(demo, target):
    _, embed = P.encoder_features(demo.text.model, target)
    torch.testing.assert_close(embed, demo.text.model.encode_image(target))


@pytest.mark.parametrize("architecture", ["orig", "skip"])
def test_w_plus_with_equal_rows_renders_like_one_w(demo, architecture):
    sampler = tiny_sampler(demo, architecture, alpha=0.5)   # Mid-fade: 'orig' also runs the previous toRGB.
    w = sampler.G.mapping(torch.randn(2, 16), sampler.embed(["a red circle", "a blue square"]))
    one = P.synthesize(sampler, w[:, None])
    plus = P.synthesize(sampler, w[:, None].expand(-1, P.num_ws(sampler.G, sampler.stage), -1))
    torch.testing.assert_close(plus, one)
    assert P.num_ws(sampler.G, 2) == 2 + 3 * 2


def test_w_plus_layers_are_independent(demo):
    sampler = tiny_sampler(demo)
    w = sampler.G.mapping(torch.randn(1, 16), sampler.embed(["a red circle"]))[:, None]
    ws = w.repeat(1, P.num_ws(sampler.G, sampler.stage), 1)
    ws[:, -1] += 1.0                                        # Only the last toRGB's style changes.
    assert not torch.allclose(P.synthesize(sampler, ws), P.synthesize(sampler, w))


def test_loss_decreases_and_psnr_rises(demo, target):
    result = P.project(demo, target, [CAPTION], P.ProjectorConfig(num_steps=30, frame_every=10))
    assert result.losses[-1] < 0.7 * result.losses[0]
    assert [s for s, _ in result.frames] == [0, 10, 20, 30]
    start, end = result.frames[0][1], result.frames[-1][1]
    assert P.psnr(end, target) > P.psnr(start, target) + 1.0
    assert P.encoder_distance(demo, end, target) < P.encoder_distance(demo, start, target)


def test_known_w_is_recovered(demo):
    text = demo.embed([CAPTION])
    w_true = demo.G.mapping(seeded_normal([3], demo.G.cfg.z_dim, "cpu"), text)
    target = P.synthesize(demo, w_true[:, None]).detach()
    result = P.project(demo, target, [CAPTION], P.ProjectorConfig(num_steps=60, frame_every=60))
    start, end = (P.psnr(img, target).item() for _, img in (result.frames[0], result.frames[-1]))
    assert end > start + 7.0 and end > 42.0, (start, end)


def test_w_plus_shape_and_caption_part_held(demo):
    sampler = tiny_sampler(demo)
    G, target = sampler.G, torch.zeros(2, 3, 16, 16)
    result = P.project(sampler, target, ["a red circle", None], P.ProjectorConfig(num_steps=3, w_plus=True))
    assert result.w.shape == (2, P.num_ws(G, sampler.stage), G.cfg.w_total)
    assert result.captions == ["a red circle", ""]
    fixed = P.caption_part(G, sampler.embed(["a red circle", ""]))
    assert torch.equal(result.w[..., G.cfg.w_dim:], fixed[:, None].expand(-1, result.w.shape[1], -1))


def test_edit_replaces_the_caption_part_exactly(demo):
    sampler = tiny_sampler(demo)
    G, d = sampler.G, sampler.G.cfg.w_dim
    w = torch.randn(2, 5, G.cfg.w_total)
    old, new = ["a red circle", "a red square"], ["a blue circle", "a red triangle"]
    for strength in (0.0, 1.5):
        out = P.edit_w(sampler, w, old, new, strength)
        assert torch.equal(out[..., d:], P.caption_part(G, sampler.embed(new))[:, None].expand(-1, 5, -1))
        shift = sampler.caption_mean_w(sampler.embed(new)) - sampler.caption_mean_w(sampler.embed(old))
        torch.testing.assert_close(out[..., :d], w[..., :d] + strength * shift[:, None, :d])
    assert torch.equal(P.edit_w(sampler, w, old, new, 0.0)[..., :d], w[..., :d])


def test_edit_without_a_caption_part_is_the_mean_w_shift(demo):
    sampler = tiny_sampler(demo, text_w_dim=0)
    w, old, new = torch.randn(1, 1, sampler.G.cfg.w_total), [CAPTION], [CAPTION.replace("blue", "red")]
    assert torch.equal(P.edit_w(sampler, w, old, new, 0.0), w)
    shift = sampler.caption_mean_w(sampler.embed(new)) - sampler.caption_mean_w(sampler.embed(old))
    torch.testing.assert_close(P.edit_w(sampler, w, old, new, 2.0), w + 2 * shift[:, None])


def test_optimised_noise_stays_normalised_and_buffers_come_back(demo):
    sampler = tiny_sampler(demo)
    before = {k: m.noise_const.clone() for k, m in P.noise_layers(sampler.G, sampler.stage).items()}
    result = P.project(sampler, torch.zeros(2, 3, 16, 16), ["a red circle"] * 2,
                       P.ProjectorConfig(num_steps=4, optimize_noise=True))
    assert set(result.noise) == set(before)
    for name, v in result.noise.items():
        assert v.shape == (2, 1, *before[name].shape)
        torch.testing.assert_close(v.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(v.square().mean(dim=(1, 2, 3)), torch.ones(2))
        assert not torch.equal(v[0, 0], before[name])       # It was optimised...
    for name, m in P.noise_layers(sampler.G, sampler.stage).items():
        assert torch.equal(m.noise_const, before[name])     # ...in place of the buffers, which are back.
    with torch.no_grad():
        own = P.synthesize(sampler, result.w, result.noise)
    torch.testing.assert_close(own, result.frames[-1][1])
    assert not torch.allclose(own, P.synthesize(sampler, result.w))


def test_noise_regularization_closed_form():
    # A checkerboard correlates -1 with its one-pixel shifts in x and y: (-1)^2 + (-1)^2 = 2 at
    # 16x16; its 2x2 average is 0, so the 8x8 scale adds nothing. A constant map: 2 per scale.
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1
    reg = P.noise_regularization({"a": checker.expand(1, 1, 16, 16), "b": torch.ones(1, 1, 16, 16)})
    torch.testing.assert_close(reg, torch.tensor([2.0 + 4.0]))


def test_schedule_ramps_as_nvlabs():
    cfg = P.ProjectorConfig()
    assert P.lr_at(0.0, cfg) == 0.0
    assert P.lr_at(0.05, cfg) == pytest.approx(cfg.lr) and P.lr_at(0.5, cfg) == pytest.approx(cfg.lr)
    assert P.lr_at(0.875, cfg) == pytest.approx(cfg.lr / 2) and P.lr_at(0.999, cfg) < 1e-4
    assert P.w_noise_at(0.0, cfg) == cfg.w_noise and P.w_noise_at(0.75, cfg) == 0.0
    assert P.w_noise_at(0.375, cfg) == pytest.approx(cfg.w_noise / 4)


def test_cli_writes_all_files(demo, tmp_path):
    Image.fromarray(np.asarray(render_scene(SCENE, 64))).save(tmp_path / "pic.png")
    out = tmp_path / "out"
    project_cli.main(["--target", str(tmp_path / "pic.png"), "--caption", CAPTION, "--edit",
                      CAPTION.replace("blue", "red"), "--steps", "4", "--frame_every", "2", "--outdir", str(out),
                      "--device", "cpu"])
    names = {"target.png", "reconstruction.png", "edited.png", "progress.png", "projected_w.pt", "projection.json"}
    assert names <= {p.name for p in out.iterdir()}
    for name in ("target.png", "reconstruction.png", "edited.png"):
        assert Image.open(out / name).size == (32, 32)
    assert Image.open(out / "progress.png").size == (4 * 34 + 2, 36)  # Steps 0, 2, 4, then the target.
    saved = torch.load(out / "projected_w.pt", weights_only=True)
    assert saved["w"].shape == (1, demo.G.cfg.w_total) and saved["edit"]["w"].shape == (1, demo.G.cfg.w_total)
    report = json.loads((out / "projection.json").read_text())
    assert report["psnr"] > 10 and 0 <= report["encoder_distance"] <= 2 and report["frame_steps"] == [0, 2, 4]


@pytest.mark.parametrize("content", [None, b"not a picture"])
def test_cli_bad_target_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "pic.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        project_cli.main(["--target", str(path), "--outdir", str(tmp_path / "out"), "--device", "cpu"])
    msg = str(e.value)
    assert msg.startswith("error: cannot read --target") and "\n" not in msg
    assert not (tmp_path / "out").exists()


def test_benchmark_runs_and_prints_both_tables(capsys):
    from benchmarks import bench_projector

    figures = bench_projector.main(["--num", "2", "--steps", "2", "--modes", "w", "--strengths", "1"])
    out = capsys.readouterr().out
    assert "| w | 2 |" in out and "| w | colour | 1 |" in out and "| generate | shape |" in out
    assert len(figures["reconstruction"]) == 1 and len(figures["edits"]) == 2 + 2


def test_generate_init_image_on_a_gan_projects_then_edits(tmp_path, monkeypatch):
    import functools

    from stylegan_t2i.cli import generate

    monkeypatch.setattr(generate, "project_and_edit",       # 60 steps instead of 300, for time.
                        functools.partial(P.project_and_edit, cfg=P.ProjectorConfig(num_steps=60)))
    Image.fromarray(np.asarray(render_scene(SCENE, 32))).save(tmp_path / "pic.png")
    red = CAPTION.replace("blue", "red")
    argv = ["--checkpoint", str(DEMO_MODEL), "--init_image", str(tmp_path / "pic.png"), "--device", "cpu",
            "--text", red, "--text", CAPTION, "--n", "1", "--size", "0", "--outdir", str(tmp_path / "out")]
    generate.main(argv + ["--init_caption", CAPTION, "--strength", "1"])
    edited = np.asarray(Image.open(tmp_path / "out" / "p000-s0000.png")).astype(float)
    same = np.asarray(Image.open(tmp_path / "out" / "p001-s0000.png")).astype(float)
    target = np.asarray(render_scene(SCENE, 32)).astype(float)
    assert np.abs(same - target).mean() < 8                 # Its own caption: the reconstruction.
    assert edited[..., 0].mean() > target[..., 0].mean() + 10   # Red where the blue triangle was.
    with pytest.raises(SystemExit, match="--truncation does not apply"):
        generate.main(argv + ["--truncation", "0.5"])
