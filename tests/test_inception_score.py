"""Inception Score: closed forms on logits we choose, the InceptionV3 logits it reads, and
`--metrics is` in stylegan_t2i.evaluation and tools/evaluate.py. Nothing is downloaded: the
InceptionV3 weights are a randomly initialised model's state dict, saved as the real file would be."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stylegan_t2i.cli import evaluate
from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.evaluation import EvalConfig, eval_captions, eval_seeds, evaluate_sampler, generate_u8
from stylegan_t2i.inference import GanOptions, parse_options
from stylegan_t2i.metrics import InceptionV3, extract_features, inception_score, load_inception, make_feature_extractor

DEMO = Path(__file__).resolve().parents[1] / "pretrained" / "demo-gan.pt"


def _is_reference(probs: np.ndarray) -> float:
    """The reference code's formula for one part, in float64 (openai/improved-gan)."""
    py = probs.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(probs * (np.log(probs) - np.log(py)), axis=1))))


def _one_hot_logits(labels: np.ndarray, k: int, scale: float) -> np.ndarray:
    """Logits [N, K]: `scale` on each image's class, 0 elsewhere (p(y|x) -> one-hot as scale grows)."""
    return scale * np.eye(k)[labels]


# ---------------------------------------------------------------------------- closed forms

@pytest.mark.parametrize("scale", [60.0, 1e4])     # 1e4: p(y|x) is exactly one-hot in float64.
def test_confident_uniform_classes_score_k_and_one_class_scores_one(scale):
    k, splits = 7, 10
    labels = np.arange(splits * k * 3) % k      # Every contiguous part holds each class 3 times.
    mean, std = inception_score(_one_hot_logits(labels, k, scale), splits=splits)
    assert mean == pytest.approx(k, abs=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    same = _one_hot_logits(np.full(200, 4), k, scale)
    assert inception_score(same, splits=splits) == pytest.approx((1.0, 0.0), abs=1e-6)
    # float32 torch logits on any device go through the same float64 path.
    torch_mean, _ = inception_score(torch.from_numpy(_one_hot_logits(labels, k, scale)).float(), splits)
    assert torch_mean == pytest.approx(k, abs=1e-6)


def test_two_classes_by_hand():
    # Two images, p(y|x) = (0.9, 0.1) and (0.2, 0.8): p(y) = (0.55, 0.45).
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    kl = [0.9 * np.log(0.9 / 0.55) + 0.1 * np.log(0.1 / 0.45),
          0.2 * np.log(0.2 / 0.55) + 0.8 * np.log(0.8 / 0.45)]
    by_hand = float(np.exp(np.mean(kl)))
    assert by_hand == pytest.approx(_is_reference(probs), rel=1e-12)
    mean, std = inception_score(np.log(probs), splits=1)       # Log-probabilities are valid logits.
    assert mean == pytest.approx(by_hand, rel=1e-12) and std == 0.0
    # Any per-row shift of the logits is the same softmax.
    assert inception_score(np.log(probs) + np.array([[3.0], [-50.0]]), splits=1)[0] == \
        pytest.approx(by_hand, rel=1e-12)


def test_splits_are_contiguous_parts_with_their_own_marginal():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(103, 5))      # 103 = 10 parts of 10 or 11 images.
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    parts = [_is_reference(probs[i * 103 // 10:(i + 1) * 103 // 10]) for i in range(10)]
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(np.mean(parts), rel=1e-12) and std == pytest.approx(np.std(parts), rel=1e-10)
    assert std > 0 and min(parts) >= 1.0
    # The same part repeated: every part scores alike, so the std over parts is 0.
    tiled = np.tile(logits[:11], (4, 1))
    mean4, std4 = inception_score(tiled, splits=4)
    assert mean4 == pytest.approx(_is_reference(probs[:11]), rel=1e-12) and std4 == pytest.approx(0, abs=1e-12)
    # One image per part: each part's marginal is that image's p(y|x), so IS = exp(0) = 1.
    assert inception_score(logits[:10], splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="at least one image per split: 9 images, splits=10"):
        inception_score(np.zeros((9, 3)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        inception_score(np.array([[0.0, np.nan]] * 10))
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        inception_score(np.zeros(10))


# ---------------------------------------------------------------------------- InceptionV3 logits

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random InceptionV3 weights with BatchNorm statistics taken from one batch of noise: at the
    default statistics (mean 0, var 1) activations fade through the 94 layers and the logits of
    any two images agree to 1e-9 (IS = 1 for everything); calibrated, IS is about 1.01-1.02."""
    torch.manual_seed(0)
    model = InceptionV3()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None       # Cumulative average: one batch sets the statistics exactly.
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 16, 16) * 2 - 1)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-test.pth"
    torch.save(model.state_dict(), path)
    return path


def test_logits_are_the_classifier_weight_on_pool3_without_bias(weights):
    model = load_inception(weights)
    img = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        pool3 = model(img)
        logits = model.logits(pool3)
    assert pool3.shape == (2, 2048) and logits.shape == (2, 1008)
    torch.testing.assert_close(logits, pool3 @ model.fc.weight.T)
    torch.testing.assert_close(model.logits(pool3, bias=True), model.fc(pool3))


# ---------------------------------------------------------------------------- evaluation and CLI

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    image_dir, label_dir = generate_demo_dataset(tmp_path_factory.mktemp("data"), resolution=32, num_images=8)
    return image_dir, label_dir


class NoiseSampler:
    """A 'sampler' drawing seeded noise images: all evaluate_sampler needs for InceptionV3 metrics."""

    kind, kimg, resolution, text = "gan", 0.0, 8, None

    def options(self, **options):
        return parse_options(GanOptions, self.kind, options)

    def sample(self, captions, seeds, **options):
        return torch.stack([torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(s)) * 2 - 1
                            for s in seeds])


def test_is_with_kid_in_one_pass_equals_is_alone_and_needs_inception(weights, data):
    dataset = ImageLabelDataset(*data, 8, verbose=False)
    cache: dict = {}
    cfg = dict(num=4, batch=4, is_splits=2, kid_subsets=2, inception=str(weights))
    both = evaluate_sampler(NoiseSampler(), dataset, EvalConfig(metrics=("kid", "is"), **cfg), "cpu",
                            progress=False, cache=cache)
    alone = evaluate_sampler(NoiseSampler(), dataset, EvalConfig(metrics=("is",), **cfg), "cpu",
                             progress=False, cache=cache)
    assert (both["is"], both["is_std"]) == (alone["is"], alone["is_std"]) and "kid" in both
    assert 1.001 < alone["is"] < 2 and alone["feature_space"] == "inception" and "kid" not in alone
    # By hand: the generated images (not the real ones) -> pool3 -> classifier logits -> 2 splits.
    fake_u8, _ = generate_u8(NoiseSampler(), eval_captions(dataset.captions, 4, 0), eval_seeds(4, 0),
                             EvalConfig(**cfg), progress=False)
    extractor = make_feature_extractor(weights)
    pool3 = extract_features(extractor, [fake_u8], batch=4, device="cpu", progress=False)
    with torch.no_grad():
        expected = inception_score(extractor.module.logits(pool3), splits=2)
    assert (alone["is"], alone["is_std"]) == expected
    with pytest.raises(ValueError, match="needs the InceptionV3 classifier"):
        EvalConfig(metrics=("fd", "is"))
    with pytest.raises(ValueError, match="is_splits=10 needs 1 <= is_splits <= num"):
        EvalConfig(metrics=("is",), num=4, inception=str(weights))


def test_evaluate_cli_scores_is_and_missing_weights_are_one_line_errors(weights, data, tmp_path, capsys):
    args = ["--checkpoint", str(DEMO), "--image_dir", str(data[0]), "--label_dir", str(data[1]),
            "--num", "10", "--batch", "10", "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        evaluate.main(args + ["--metrics", "is"])
    assert "\n" not in str(e.value) and "--inception" in str(e.value)
    with pytest.raises(SystemExit) as e:
        evaluate.main(args + ["--metrics", "is", "--inception", str(tmp_path / "nothere.pth")])
    assert "\n" not in str(e.value) and "nothere.pth: InceptionV3 weights file not found" in str(e.value)
    out = tmp_path / "e.json"
    evaluate.main(args + ["--metrics", "is", "--inception", str(weights), "--json", str(out)])
    result = json.loads(out.read_text())
    # 10 images in the default 10 splits: one image per part, whose own p(y|x) is its marginal.
    assert result["metrics"] == ["is"] and result["is"] == pytest.approx(1.0, abs=1e-9)
    assert result["is_std"] == pytest.approx(0.0, abs=1e-9) and result["eval_config"]["is_splits"] == 10
    assert "fd" not in result and "\nis " in capsys.readouterr().out
