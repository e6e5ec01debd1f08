"""generate.py on a tiny GAN checkpoint trained in the test: outputs, viewing size and captions,
determinism, discovery, errors."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.checkpoint import FORMAT_VERSION
from stylegan_t2i.cli import generate
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.images import BORDER
from stylegan_t2i.inference import export_for_generation

RES = 8
NATIVE = ["--size", "0"]    # The model's own RES px, for the tests that index grid cells by RES.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    image_dir, label_dir = generate_demo_dataset(root / "data", resolution=16, num_images=32)
    final = train_progan.main(["--image_dir", str(image_dir), "--label_dir", str(label_dir),
                               "--out", str(root / "runs"), "--max_res", str(RES), "--batch", "8",
                               "--kimg_per_stage", "0.008", "--total_kimg", "0.024",
                               "--text_encoder_steps", "4", "--device", "cpu"])
    return final


def _png(path):
    return np.asarray(Image.open(path))


def _grid_shape(rows, cols, res=RES, pad=2):
    return (rows * (res + pad) + pad, cols * (res + pad) + pad, 3)


def test_grid_rows_are_prompts_and_columns_seeds(trained, tmp_path):
    out = tmp_path / "g.png"
    generate.main(["--checkpoint", str(trained), "--text", "a red circle", "--text", "a blue square",
                   "--n", "3", "--out", str(out), *NATIVE])
    assert _png(out).shape == _grid_shape(2, 3)


def test_outdir_writes_one_png_per_image_and_optional_grid(trained, tmp_path):
    written = generate.main(["--checkpoint", str(trained), "--text", "a red circle", "--seeds", "4,7",
                             "--outdir", str(tmp_path / "o"), "--grid", *NATIVE])
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["grid.png", "p000-s0004.png", "p000-s0007.png"]
    assert len(written) == 3 and _png(tmp_path / "o" / "p000-s0004.png").shape == (RES, RES, 3)


def test_same_seed_same_image_and_other_seed_differs(trained, tmp_path):
    args = ["--checkpoint", str(trained), "--text", "a small red circle on the left on a black background", *NATIVE]
    generate.main(args + ["--seeds", "5", "--out", str(tmp_path / "a.png")])
    generate.main(args + ["--seeds", "5", "--out", str(tmp_path / "b.png")])
    generate.main(args + ["--seeds", "6", "--out", str(tmp_path / "c.png")])
    a, b, c = (_png(tmp_path / f"{n}.png") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # A seed's image does not depend on which other seeds share the batch.
    generate.main(args + ["--seeds", "4-6", "--outdir", str(tmp_path / "many")])
    assert np.array_equal(_png(tmp_path / "many" / "p000-s0005.png"), a[2:2 + RES, 2:2 + RES])


def test_size_resizes_every_image_nearest_in_exact_blocks_or_lanczos_smooth(trained, tmp_path):
    def run(name, *flags):
        generate.main(["--checkpoint", str(trained), "--text", "a red circle", "--seeds", "0-1",
                       "--outdir", str(tmp_path / name), "--grid", *flags])
        return [_png(tmp_path / name / f) for f in ("grid.png", "p000-s0000.png", "p000-s0001.png")]

    native, near, lanczos, shrunk = (run("native", *NATIVE), run("near", "--size", "128"),
                                     run("lanczos", "--size", "128", "--resample", "lanczos"),
                                     run("shrunk", "--size", "4", "--resample", "lanczos"))
    assert native[0].shape == _grid_shape(1, 2) and native[1].shape == (RES, RES, 3)
    assert near[0].shape == lanczos[0].shape == _grid_shape(1, 2, res=128)
    assert shrunk[0].shape == _grid_shape(1, 2, res=4) and shrunk[1].shape == (4, 4, 3)
    for small, big, smooth in zip(native[1:], near[1:], lanczos[1:]):
        blocks = torch.from_numpy(small.copy()).repeat_interleave(128 // RES, 0).repeat_interleave(128 // RES, 1)
        assert big.shape == smooth.shape == (128, 128, 3) and np.array_equal(big, blocks.numpy())
        assert not np.array_equal(smooth, big)
    assert np.array_equal(near[0][2:130, 2:130], near[1])     # The grid holds the resized images.


def test_default_size_is_large_and_border_light_gray(trained, tmp_path):
    generate.main(["--checkpoint", str(trained), "--text", "a red circle", "--n", "2", "--out", str(tmp_path / "g.png")])
    grid = _png(tmp_path / "g.png")
    assert grid.shape == _grid_shape(1, 2, res=generate.VIEW_SIZE)
    assert (grid[:2] == BORDER).all() and (grid[:, 2 + generate.VIEW_SIZE:4 + generate.VIEW_SIZE] == BORDER).all()


def test_captions_add_a_text_band_above_each_row(trained, tmp_path):
    args = ["--checkpoint", str(trained), "--text", "a red circle", "--text", "a blue square", "--n", "2", "--size", "64"]
    generate.main(args + ["--out", str(tmp_path / "plain.png")])
    generate.main(args + ["--captions", "--out", str(tmp_path / "cap.png")])
    plain, cap = _png(tmp_path / "plain.png"), _png(tmp_path / "cap.png")
    assert cap.shape[1] == plain.shape[1] and cap.shape[0] > plain.shape[0]
    band = (cap.shape[0] - plain.shape[0]) // 2                 # One band (text + 2 px) a row.
    row_h = band + 64 + 2
    for r in range(2):
        text = cap[2 + r * row_h:band + r * row_h, 2:-2]
        assert (text != BORDER).any(axis=-1).sum() > 20         # Ink in each row's caption band.
        # The images themselves are the same as without captions.
        assert np.array_equal(cap[band + r * row_h:band + r * row_h + 64 + 4], plain[r * 66:r * 66 + 68])
    generate.main(["--checkpoint", str(trained), "--interpolate", "a red circle", "a blue square", "--frames", "3",
                   "--seeds", "0", "--captions", "--size", "64", "--out", str(tmp_path / "strip.png")])
    assert _png(tmp_path / "strip.png").shape == (band + 64 + 4, _grid_shape(1, 3, res=64)[1], 3)


def test_truncation_zero_gives_the_caption_mean_for_every_seed(trained, tmp_path):
    generate.main(["--checkpoint", str(trained), "--text", "a red circle", "--seeds", "0-2",
                   "--truncation", "0", "--outdir", str(tmp_path)])
    imgs = [_png(tmp_path / f"p000-s{s:04d}.png") for s in range(3)]
    assert np.array_equal(imgs[0], imgs[1]) and np.array_equal(imgs[1], imgs[2])


def test_interpolation_strip(trained, tmp_path):
    out = tmp_path / "strip.png"
    generate.main(["--checkpoint", str(trained), "--interpolate", "a red circle", "a blue square",
                   "--frames", "5", "--seeds", "0-1", "--out", str(out), *NATIVE])
    strip = _png(out)
    assert strip.shape == _grid_shape(2, 5)
    first, last = strip[2:2 + RES, 2:2 + RES], strip[2:2 + RES, -(RES + 2):-2]
    assert not np.array_equal(first, last)


def test_text_file_prompts(trained, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n\n a blue square \n")
    generate.main(["--checkpoint", str(trained), "--text_file", str(prompts), "--n", "2",
                   "--out", str(tmp_path / "g.png"), *NATIVE])
    assert _png(tmp_path / "g.png").shape == _grid_shape(2, 2)


def test_auto_discovery_prefers_newest_final_then_demo_model(trained, tmp_path, monkeypatch, capsys):
    runs = trained.parent.parent
    generate.main(["--runs", str(runs), "--text", "a red circle", "--n", "1", "--out", str(tmp_path / "x.png")])
    assert f"using checkpoint: {trained}" in capsys.readouterr().out
    exported = export_for_generation(trained, tmp_path / "demo.pt")
    monkeypatch.setattr(generate, "DEMO_MODEL", exported)
    generate.main(["--runs", str(tmp_path / "no-runs"), "--text", "a red circle", "--n", "1",
                   "--out", str(tmp_path / "y.png")])
    assert f"using checkpoint: {exported}" in capsys.readouterr().out
    monkeypatch.setattr(generate, "DEMO_MODEL", tmp_path / "missing.pt")
    with pytest.raises(SystemExit, match="no checkpoint under"):
        generate.main(["--runs", str(tmp_path / "no-runs"), "--text", "a red circle"])


def test_exported_model_is_small_and_generates_the_same_images(trained, tmp_path):
    exported = export_for_generation(trained, tmp_path / "demo.pt")
    assert exported.stat().st_size < trained.stat().st_size / 2
    for ck, name in ((trained, "a.png"), (exported, "b.png")):
        generate.main(["--checkpoint", str(ck), "--text", "a red circle", "--n", "2", "--out", str(tmp_path / name)])
    assert np.array_equal(_png(tmp_path / "a.png"), _png(tmp_path / "b.png"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _bad_checkpoints(tmp_path, trained):
    newer = tmp_path / "newer.pt"
    torch.save({"format": "stylegan_t2i", "version": FORMAT_VERSION + 1, "kind": "gan"}, newer)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        torch.save({"x": _Evil()}, f, pickle_module=pickle)
    return [(tmp_path / "missing.pt", "no such checkpoint"),
            (trained.parent / "text_encoder.pt", "kind 'text_encoder'"),
            (newer, "newer than this code"), (junk, "not a readable checkpoint"), (evil, "refused to load")]


def test_bad_checkpoints_are_one_line_errors(trained, tmp_path):
    for path, message in _bad_checkpoints(tmp_path, trained):
        with pytest.raises(SystemExit, match=message) as e:
            generate.main(["--checkpoint", str(path), "--text", "a red circle", "--out", str(tmp_path / "o.png")])
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value)


def test_prompt_and_output_errors(trained, tmp_path, capsys):
    ck = ["--checkpoint", str(trained)]
    with pytest.raises(SystemExit, match=r"--size must be 0 .* >= 1, got -1") as e:
        generate.main(ck + ["--text", "a red circle", "--size", "-1", "--out", str(tmp_path / "neg.png")])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value) and not (tmp_path / "neg.png").exists()
    with pytest.raises(SystemExit, match="empty prompt"):
        generate.main(ck + ["--text", "   "])
    with pytest.raises(SystemExit, match="no prompt"):
        generate.main(ck)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="cannot write"):
        generate.main(ck + ["--text", "a red circle", "--out", str(blocker / "g.png")])
    long_prompt = " ".join(["a small red circle on the left"] * 20)
    generate.main(ck + ["--text", long_prompt, "--n", "1", "--out", str(tmp_path / "long.png")])
    assert "warning:" in capsys.readouterr().err and (tmp_path / "long.png").is_file()


def test_export_tool_writes_a_loadable_file_and_rejects_other_kinds(trained, tmp_path):
    from stylegan_t2i.cli import export_generator

    out = export_generator.main(["--checkpoint", str(trained), "--out", str(tmp_path / "m.pt")])
    generate.main(["--checkpoint", str(out), "--text", "a red circle", "--n", "1", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="kind 'text_encoder'"):
        export_generator.main(["--checkpoint", str(trained.parent / "text_encoder.pt"), "--out", str(tmp_path / "n.pt")])
