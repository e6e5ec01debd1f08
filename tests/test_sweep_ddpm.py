"""tools/sweep_ddpm.py on a tiny DDPM trained in the test (as in test_evaluate.py): one labelled
grid per prompt, of the right pixel size and holding the sampler's images; one finite table row
per (guidance, steps) cell; one-line errors for bad input.

One torch thread for the whole session comes from tests/conftest.py.
"""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.cli import sweep_ddpm, train_ddpm
from stylegan_t2i.cli.sweep_ddpm import LABEL_WIDTH, MIN_CELL, Cell, cell_images, prompt_grid
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.evaluation import eval_seeds
from stylegan_t2i.images import resize_batch, to_uint8
from stylegan_t2i.inference import DEMO_MODEL, load_sampler

RES = 8
CELL = MIN_CELL             # 8 px enlarged 8x.
PROMPTS = ["a red circle", "a blue square"]
BAND, HEADER, PAD, GAP = 12, 18, 2, 8   # Prompt band, step titles, make_grid border, labelled_grid gap.


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    image_dir, label_dir = generate_demo_dataset(tmp_path_factory.mktemp("data"), resolution=16, num_images=24)
    return ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]


@pytest.fixture(scope="module")
def ddpm(data, tmp_path_factory):
    return train_ddpm.main(data + ["--out", str(tmp_path_factory.mktemp("ddpm")), "--max_res", str(RES),
                                   "--batch", "8", "--total_kimg", "0.008", "--sample_steps", "1",
                                   "--text_encoder_steps", "3", "--device", "cpu"])


def _sweep(ddpm, data, out, *extra):
    return sweep_ddpm.main(["--checkpoint", str(ddpm), *data, "--num", "8", "--batch", "8", "--device", "cpu",
                            "--out", str(out), *extra])


def test_grid_per_prompt_and_a_finite_row_per_cell(ddpm, data, tmp_path, capsys):
    guidance, steps, k = [1.0, 3.0, 7.5], [1, 2], 2
    report = _sweep(ddpm, data, tmp_path, "--guidance", "1,3,7.5", "--ddim_steps", "1,2", "--prompts", *PROMPTS,
                    "--samples_per_prompt", str(k), "--no_progress")
    assert capsys.readouterr().err == ""        # --no_progress: no bar.
    cells = json.loads((tmp_path / "table.json").read_text())["cells"]
    assert [(c["guidance"], c["steps"]) for c in cells] == [(g, s) for g in guidance for s in steps]
    assert all(math.isfinite(c[key]) for c in cells for key in ("fd", "alignment", "r_precision"))
    assert all(c["num"] == 8 and c["sampler"] == "ddim" and c["eta"] == 0 for c in cells)
    md = (tmp_path / "table.md").read_text()
    assert all(f"| {g:g} | {s} | " in md for g in guidance for s in steps) and "| guidance 7.5 |" in md

    block_w = k * (CELL + PAD) + PAD
    shape = (BAND + HEADER + len(guidance) * (CELL + PAD) + PAD, LABEL_WIDTH + len(steps) * (block_w + GAP), 3)
    grids = [np.asarray(Image.open(tmp_path / name)) for name in report["grids"]]
    assert len(grids) == len(PROMPTS) and all(g.shape == shape for g in grids)
    # Labels are drawn: dark text pixels in the prompt band, the step titles and the row labels.
    assert grids[0][:BAND].min() < 128 and grids[0][BAND:BAND + HEADER, LABEL_WIDTH:].min() < 128
    assert grids[0][BAND + HEADER:, :LABEL_WIDTH].min() < 128

    # Cell (guidance 3, 2 steps), seed 1 of prompt 1 holds the sampler's own image (up to one
    # uint8 level: batched matmuls round differently).
    sampler = load_sampler(ddpm)
    img = sampler.sample([PROMPTS[1]], eval_seeds(k, 0)[1:], guidance=3.0, steps=2, sampler="ddim")
    want = resize_batch(to_uint8(img), CELL)[0].numpy().astype(int)
    top = BAND + HEADER + PAD + 1 * (CELL + PAD)
    left = LABEL_WIDTH + 1 * (block_w + GAP) + PAD + 1 * (CELL + PAD)
    got = grids[1][top:top + CELL, left:left + CELL].astype(int)
    assert np.abs(got - want).max() <= 1


class StubSampler:
    """Image colour = (20 * guidance, 10 * steps, 100 * prompt index + 40 * seed): a layout check."""

    def __init__(self, prompts):
        self.prompts = prompts

    def sample(self, captions, seeds, guidance, steps, sampler):
        rgb = [(20 * guidance, 10 * steps, 100 * self.prompts.index(c) + 40 * s) for c, s in zip(captions, seeds)]
        return (torch.tensor(rgb)[:, :, None, None] / 127.5 - 1).expand(-1, -1, RES, RES)


def test_grid_rows_are_guidance_and_column_blocks_steps():
    guidance, steps, seeds = [1.0, 2.5, 5.0], [1, 3], [0, 1]
    stub = StubSampler(PROMPTS)
    images = {Cell(g, s): cell_images(stub, Cell(g, s), PROMPTS, seeds) for g in guidance for s in steps}
    grid = prompt_grid(images, 1, PROMPTS[1], guidance, steps)
    block_w = len(seeds) * (CELL + PAD) + PAD
    for r, g in enumerate(guidance):
        for c, s in enumerate(steps):
            for k, seed in enumerate(seeds):
                top = BAND + HEADER + PAD + r * (CELL + PAD)
                left = LABEL_WIDTH + c * (block_w + GAP) + PAD + k * (CELL + PAD)
                cell = grid[top:top + CELL, left:left + CELL].reshape(-1, 3)
                assert (cell == [20 * g, 10 * s, 100 + 40 * seed]).all(), (g, s, seed)


def test_progress_bar_over_the_cells(ddpm, data, tmp_path, capsys):
    _sweep(ddpm, data, tmp_path, "--guidance", "2", "--ddim_steps", "1", "--prompts", PROMPTS[0],
           "--samples_per_prompt", "1")
    err = capsys.readouterr().err
    assert "sweep: 100%" in err and "1/1" in err


def _usage_error(ddpm, tmp_path, capsys, *flags, fragment):
    with pytest.raises(SystemExit) as e:
        sweep_ddpm.main(["--checkpoint", str(ddpm), "--out", str(tmp_path), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert fragment in err and "e.g." in err, err


@pytest.mark.parametrize("flags, fragment", [
    (["--guidance", "1,x"], "argument --guidance: bad guidance list '1,x'"),
    (["--guidance=-1,3"], "bad guidance list '-1,3': give numbers >= 0"),
    (["--guidance", "nan"], "bad guidance list"),
    (["--guidance", "3,3"], "each once"),
    (["--ddim_steps", "0,10"], "argument --ddim_steps: bad step list '0,10': give integers >= 1"),
    (["--ddim_steps=-5"], "bad step list"),
    (["--ddim_steps", "2.5"], "bad step list"),
    (["--ddim_steps", ""], "bad step list"),
])
def test_bad_lists_are_usage_errors(ddpm, tmp_path, capsys, flags, fragment):
    _usage_error(ddpm, tmp_path, capsys, *flags, fragment=fragment)


def _one_line_error(argv, *fragments):
    with pytest.raises(SystemExit) as e:
        sweep_ddpm.main(argv)
    msg = str(e.value)
    assert msg.startswith("error: ") and "\n" not in msg and all(f in msg for f in fragments), msg


def test_gan_checkpoint_missing_files_and_too_many_steps_are_one_line_errors(ddpm, data, tmp_path):
    out = ["--out", str(tmp_path / "o")]
    _one_line_error(["--checkpoint", str(DEMO_MODEL), *data, *out], "is a gan checkpoint", "tools/train_ddpm.py")
    _one_line_error(["--checkpoint", str(tmp_path / "none.pt"), *data, *out], "none.pt", "no such checkpoint")
    _one_line_error(["--checkpoint", str(ddpm), "--image_dir", str(tmp_path / "nope"), "--label_dir", data[3], *out],
                    "nope", "does not exist")
    _one_line_error(["--checkpoint", str(ddpm), *data, "--ddim_steps", "10,5000", *out],
                    "--ddim_steps 5000", "at most the 1000 training timesteps")
    (tmp_path / "file").write_text("")
    _one_line_error(["--checkpoint", str(ddpm), *data, "--out", str(tmp_path / "file" / "sub")], "cannot create --out")
