"""stylegan_t2i.evaluation, tools/evaluate.py and tools/compare.py on tiny
checkpoints trained in the test (a few steps, as in test_generate.py / test_generate_ddpm.py).

One torch thread for the whole session comes from tests/conftest.py.
"""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.cli import compare, evaluate, train_ddpm
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.evaluation import (
    SEED_STRIDE,
    EvalConfig,
    eval_captions,
    eval_seeds,
    evaluate_sampler,
    real_images_u8,
)
from stylegan_t2i.images import from_uint8
from stylegan_t2i.inference import GanOptions, load_sampler, parse_options

RES = 8
NUM = 12
JSON_KEYS = {"fd", "kid", "kid_std", "swd", "precision", "recall", "alignment", "r_precision",
             "kind", "num", "checkpoint_kimg", "feature_space", "sampling_seconds", "images_per_second"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    image_dir, label_dir = generate_demo_dataset(tmp_path_factory.mktemp("data"), resolution=16, num_images=24)
    return ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]


@pytest.fixture(scope="module")
def dataset(data):
    return ImageLabelDataset(data[1], data[3], RES, verbose=False)


@pytest.fixture(scope="module")
def gan(data, tmp_path_factory):
    return train_progan.main(data + ["--out", str(tmp_path_factory.mktemp("gan")), "--max_res", str(RES),
                                     "--batch", "8", "--kimg_per_stage", "0.008", "--total_kimg", "0.024",
                                     "--text_encoder_steps", "2", "--device", "cpu"])


@pytest.fixture(scope="module")
def ddpm(data, tmp_path_factory):
    return train_ddpm.main(data + ["--out", str(tmp_path_factory.mktemp("ddpm")), "--max_res", str(RES),
                                   "--batch", "8", "--total_kimg", "0.008", "--sample_steps", "1",
                                   "--text_encoder_steps", "3", "--device", "cpu"])    # Not the GAN's encoder.


def _cfg(**kw):
    return EvalConfig(**{"num": NUM, "batch": 8, "kid_subsets": 4, **kw})


class RealImageSampler:
    """A 'sampler' that returns dataset image i for seed s*SEED_STRIDE + i: the ideal generator."""

    kind, kimg = "gan", 0.0

    def __init__(self, dataset, text):
        self.dataset, self.text, self.resolution, self.calls = dataset, text, RES, []

    def options(self, **options):
        return parse_options(GanOptions, self.kind, options)

    def sample(self, captions, seeds, **options):
        self.options(**options)
        self.calls.append((list(captions), list(seeds)))
        idx = torch.tensor([s % SEED_STRIDE for s in seeds]) % len(self.dataset)
        return from_uint8(self.dataset.view(RES).images[idx])


def test_captions_and_seeds_depend_only_on_the_config(dataset):
    caps = eval_captions(dataset.captions, 30, seed=3)
    assert caps == eval_captions(dataset.captions, 30, seed=3)
    assert all(c in dataset.captions[i % len(dataset)] for i, c in enumerate(caps))   # cycles past 24
    assert eval_seeds(3, seed=2) == [2_000_000, 2_000_001, 2_000_002]
    # Some image has several captions, so another seed picks some other caption.
    assert caps != eval_captions(dataset.captions, 30, seed=4)
    assert real_images_u8(dataset, 4, 30).shape == (30, 3, 4, 4)


def test_gan_returns_every_figure_finite_and_is_deterministic(gan, dataset):
    sampler = load_sampler(gan)
    a = evaluate_sampler(sampler, dataset, _cfg(), "cpu", progress=False)
    assert JSON_KEYS <= set(a) and a["kind"] == "gan" and a["num"] == NUM and a["feature_space"] == "encoder"
    assert all(math.isfinite(a[k]) for k in JSON_KEYS - {"kind", "num", "feature_space"})
    assert set(a["swd_levels"]) == {str(RES)} and 0 <= a["precision"] <= 1 and -1 <= a["alignment"] <= 1
    b = evaluate_sampler(load_sampler(gan), dataset, _cfg(), "cpu", progress=False)
    timing = {"sampling_seconds", "images_per_second"}
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    c = evaluate_sampler(sampler, dataset, _cfg(seed=1, metrics=("fd",)), "cpu", progress=False)
    assert set(c) & JSON_KEYS == {"fd"} | (JSON_KEYS - {"kid", "kid_std", "swd", "precision", "recall",
                                                        "alignment", "r_precision"})
    assert c["fd"] != a["fd"]


def test_real_images_as_samples_score_perfectly_with_the_same_captions_and_seeds(gan, dataset):
    text = load_sampler(gan).text
    fakes = [RealImageSampler(dataset, text) for _ in range(2)]
    r = evaluate_sampler(fakes[0], dataset, _cfg(), "cpu", progress=False)
    evaluate_sampler(fakes[1], dataset, _cfg(), "cpu", progress=False)
    assert fakes[0].calls == fakes[1].calls and fakes[0].calls[0][1][:2] == [0, 1]
    assert r["fd"] < 1e-6 and r["swd"] < 1e-6 and r["precision"] == 1.0 and r["recall"] == 1.0
    # Identical (not independent) sets: the cross term keeps the self-pairs k(x_i, x_i) that the
    # within terms drop, so the unbiased MMD^2 estimate is below 0 rather than about 0.
    assert r["kid"] <= 0


def _read_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("kind", ["gan", "ddpm"])
def test_evaluate_tool_writes_the_documented_json(kind, gan, ddpm, data, tmp_path, capsys):
    ck, options = (gan, []) if kind == "gan" else (ddpm, ["--steps", "2"])
    out = tmp_path / "e.json"
    evaluate.main(["--checkpoint", str(ck), *data, "--num", str(NUM), "--batch", "8", *options,
                   "--json", str(out), "--device", "cpu"])
    result = _read_json(out)
    assert JSON_KEYS <= set(result) and result["kind"] == kind and result["num"] == NUM
    assert result["checkpoint"] == str(ck) and "fd " in capsys.readouterr().out
    # Every option the sampler ran with is recorded, the defaults it filled in included.
    if kind == "ddpm":
        assert result["steps"] == 2 and result["sampler"] == "ddim" and result["guidance"] == 3.0
    else:
        assert result["truncation"] == 1.0 and "steps" not in result


def test_an_option_the_checkpoint_does_not_take_is_a_one_line_error(gan, data):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(gan), *data, "--num", str(NUM), "--steps", "2", "--device", "cpu"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("error: unknown sampling option(s) steps") and "truncation" in msg


def test_compare_and_evaluate_no_progress_write_nothing_to_stderr(gan, ddpm, data, tmp_path, capsys):
    compare.main(["--gan", str(gan), "--ddpm", str(ddpm), *data, "--num", "4", "--batch", "4", "--metrics", "align",
                  "--plot_metric", "alignment", "--ddim_steps", "1", "--ddpm_steps", "1", "--ddpm_num", "2",
                  "--timing_num", "1", "--ddpm_timing_num", "1", "--samples_per_prompt", "1", "--prompts", "a red circle",
                  "--out", str(tmp_path), "--device", "cpu", "--no_progress"])
    evaluate.main(["--checkpoint", str(gan), *data, "--num", "4", "--metrics", "align", "--device", "cpu",
                   "--no_progress"])
    assert capsys.readouterr().err == ""


def test_unknown_metric_is_a_one_line_error(gan, data):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(gan), *data, "--metrics", "fd,fid"])
    msg = str(e.value)
    assert "\n" not in msg and "fid" in msg and "fd,kid,swd,pr,align" in msg


def test_compare_writes_report_plot_and_samples(gan, ddpm, data, tmp_path, capsys):
    out = tmp_path / "report"
    report = compare.main(["--gan", str(gan), "--ddpm", str(ddpm), *data, "--num", "8", "--batch", "8",
                           "--ddim_steps", "1,2", "--ddpm_steps", "2", "--ddpm_num", "6", "--timing_num", "2",
                           "--ddpm_timing_num", "2", "--samples_per_prompt", "2", "--metrics", "fd,align",
                           "--prompts", "a red circle", "a blue square", "--out", str(out), "--device", "cpu"])
    names = [r["name"] for r in report["methods"]]
    assert names == ["GAN", "DDIM-1", "DDIM-2", "DDPM-2"] and report["methods"][-1]["num"] == 6
    err = capsys.readouterr().err     # A bar over the methods, evaluate_sampler's bars and one over samples.png.
    assert all(f"{bar}: 100%" in err for bar in ("compare", "generating (ddpm)", "alignment", "samples.png"))
    assert all(r["peak_mib"] > 0 and r["images_per_second"] > 0 for r in report["methods"])
    md = (out / "report.md").read_text()
    assert all(f"| {n} |" in md for n in names) and "--ddpm_num" in md and "tools/evaluate.py" in md
    # The fixtures pretrained different text encoders: the report must say the rows do not compare.
    assert report["shared_encoder"] is False and "not comparable" in md
    assert _read_json(out / "report.json")["methods"][0]["name"] == "GAN"
    assert Image.open(out / "quality_vs_time.png").size == (640, 440)
    samples = np.asarray(Image.open(out / "samples.png"))
    # 2 prompts x (8 px enlarged to 64 + 2 pad) + 2 pad + 18 header; 4 blocks of 2 seeds.
    assert samples.shape[0] == 2 * 66 + 2 + 18 and samples.shape[1] == 220 + 4 * (2 * 66 + 2 + 8)
