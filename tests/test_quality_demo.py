"""benchmarks/quality_demo.py and stylegan_t2i/metrics/attribute_classifier.py on tiny budgets."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from benchmarks import quality_demo as qd
from stylegan_t2i.data.demo_scenes import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    BUILTIN,
    COLOUR_RGB,
    TEMPLATES,
    SceneSet,
    all_combinations,
    caption_for,
    ensure_demo_dataset,
    generate_demo_dataset,
)
from stylegan_t2i.metrics import attribute_classifier as ac

RES = 32
TINY = ac.ClassifierConfig(resolution=RES, channels=8, feature_dim=32, colour_dim=8, num_steps=300,
                           batch_size=32, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny demo dataset and a classifier trained (and cached) on it by ensure_classifier."""
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_dataset(root, resolution=RES, num_images=300)
    model, stats = ac.ensure_classifier(root, TINY, verbose=False)
    return root, model, stats


# ----------------------------------------------------------------------------------------------
# A hand-written oracle classifier: an independent reference for evaluate_generator's bookkeeping.

_FILL = np.array([COLOUR_RGB[v] for v in ATTRIBUTES["colour"]], np.float64) / 127.5 - 1
_BG = np.array([BACKGROUND_RGB[v] for v in ATTRIBUTES["background"]], np.float64) / 127.5 - 1


def _oracle_one(x):
    """x: [3, R, R] numpy -> (labels [5], features [6]) from the demo's geometry and palette."""
    r = x.shape[-1]
    bg = int(np.argmin(((_BG - x[:, 0, 0]) ** 2).sum(1)))                   # corner pixel
    diff = x - _BG[bg][:, None, None]
    far = np.unravel_index(np.argmax((diff ** 2).sum(0)), (r, r))
    colour = int(np.argmin(((_FILL - x[:, far[0], far[1]]) ** 2).sum(1)))   # most saturated pixel
    d = _FILL[colour] - _BG[bg]
    alpha = np.clip(np.einsum("chw,c->hw", diff, d) / (d @ d), 0, 1)       # coverage per pixel
    area, width, height = alpha.sum(), alpha.sum(1).max(), alpha.sum(0).max()
    coord, area = np.arange(r) + 0.5, max(area, 1e-6)
    cx, cy = (alpha.sum(0) * coord).sum() / area / r, (alpha.sum(1) * coord).sum() / area
    var_y = (alpha.sum(1) * (coord - cy) ** 2).sum() / area
    skew_y = (alpha.sum(1) * (coord - cy) ** 3).sum() / area / max(var_y, 1e-6) ** 1.5
    fill_ratio = area / max(width * height, 1e-6)                           # square 1, circle pi/4
    # An upward triangle's row profile grows linearly: skewness -0.57; circle and square: 0.
    shape = 2 if skew_y < -0.28 else 1 if fill_ratio > 0.9 else 0           # triangle, square, circle
    size = int(width / r > 0.34)
    position = int(np.argmin(np.abs(cx - np.array([0.25, 0.5, 0.75]))))
    return [shape, colour, size, position, bg], [area / r ** 2, width / r, height / r, cx, skew_y, fill_ratio]


class OracleClassifier:
    cfg = ac.ClassifierConfig(resolution=RES)

    def predict(self, img):
        out = [_oracle_one(x) for x in img.double().numpy()]
        return torch.tensor([o[0] for o in out]), torch.tensor([o[1] for o in out], dtype=torch.float64)


def _noise_generator(captions, seeds):
    return torch.stack([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in seeds])


# ----------------------------------------------------------------------------------------------

def test_parse_caption_every_template_and_combination():
    combos = all_combinations(held_out=False) + all_combinations(held_out=True)
    assert len(combos) == 270
    for c in combos:
        for t in range(len(TEMPLATES)):
            assert qd.parse_caption(caption_for(c, t)) == c
    with pytest.raises(ValueError, match="colour"):
        qd.parse_caption("a small red blue circle on the left, black background")
    with pytest.raises(ValueError, match="size"):
        qd.parse_caption("a red circle on the left on a black background")


def test_oracle_reads_real_renders():
    # The reference itself must be right before it can judge evaluate_generator.
    combos = ac.with_jitter(all_combinations(held_out=True), np.random.default_rng(0))
    pred, _ = OracleClassifier().predict(ac.render_real(combos, 64, RES))
    assert torch.equal(pred, ac.labels_of(combos))


def test_perfect_generator_scores_one_and_noise_scores_chance():
    oracle = OracleClassifier()
    perfect = qd.evaluate_generator(qd.real_generator(), oracle, RES, num_per_combo=1, seed=0)
    for split, num_combos in (("seen", 216), ("held_out", 54)):
        row = perfect[split]
        assert row["n"] == row["num_combos"] == num_combos
        assert row["all"] == 1.0 and all(row[a] == 1.0 for a in ATTRIBUTES)
    noise = qd.evaluate_generator(_noise_generator, oracle, RES, num_per_combo=1, seed=0, max_seen_combos=100)
    assert noise["seen"]["n"] == 100 and noise["fd_all"] > 10 * max(perfect["fd_all"], 0.01)
    for split in ("seen", "held_out"):
        assert noise[split]["all"] < 0.03
        # Predictions independent of the caption score at most the most frequent value's share.
        targets = ac.labels_of(qd.evaluation_combos(100, 0)[split])
        for i, a in enumerate(ATTRIBUTES):
            top_share = torch.bincount(targets[:, i]).max().item() / len(targets)
            assert noise[split][a] <= top_share + 1e-6


def test_wrong_shape_generator_is_scored_per_attribute():
    def always_circle(captions, seeds):
        circles = [c.replace("square", "circle").replace("triangle", "circle") for c in captions]
        return qd.real_generator()(circles, seeds)
    res = qd.evaluate_generator(always_circle, OracleClassifier(), RES, num_per_combo=1, seed=0)
    assert res["seen"]["shape"] == pytest.approx(72 / 216) and res["held_out"]["shape"] == pytest.approx(18 / 54)
    assert res["seen"]["colour"] == res["seen"]["position"] == 1.0


def test_recolour_keeps_background_and_repaints_shape():
    combos = ac.with_jitter(all_combinations(held_out=False)[:20], np.random.default_rng(1))
    img, labels = ac.render_real(combos, 64, RES), ac.labels_of(combos)
    out = ac.recolour_foreground(img, labels, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, :, 0, 0], img[:, :, 0, 0])            # background untouched
    for x, y, lab in zip(img, out, labels):
        inside = ((x - torch.from_numpy(_FILL[lab[1]]).float()[:, None, None]).abs() < 1e-2).all(0)
        colours = y[:, inside].T                                           # [P, 3] repainted pixels
        assert inside.any() and (colours - colours[0]).abs().max() < 1e-5    # one flat new colour
        assert (colours[0] - torch.from_numpy(_BG[lab[4]]).float()).norm() >= 0.7


def test_training_is_seeded(trained):
    img, labels = ac.load_demo_training_set(trained[0], RES, num_images=64)
    cfg = ac.ClassifierConfig(resolution=RES, channels=4, feature_dim=8, colour_dim=4, num_steps=3, batch_size=16)
    a, b = ac.train_classifier(img, labels, cfg), ac.train_classifier(img, labels, cfg)
    c = ac.train_classifier(img, labels, ac.ClassifierConfig(**{**cfg.__dict__, "seed": 1}))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.heads["shape"].weight, c.heads["shape"].weight)


def test_classifier_beats_chance_on_held_out_renders(trained):
    root, model, stats = trained
    acc = ac.held_out_real_accuracy(model, num_per_combo=2, seed=5)
    chance = qd.chance_accuracy()
    assert stats["num_train_images"] == 300 and stats["held_out_real_accuracy"]["all"] > chance["all"]
    for a in ATTRIBUTES:   # 300 tiny steps: size/position/background near 1, shape/colour on the way
        assert acc[a] > chance[a] + (0.3 if a in ("size", "position", "background") else 0.1), (a, acc)
    assert acc["all"] > 5 * chance["all"], acc


def test_cache_is_plain_data_and_reloaded(trained, monkeypatch):
    root, model, _ = trained
    path = ac.cache_path(root, RES)
    data = torch.load(path, weights_only=True)
    assert data["format"] == ac.CACHE_FORMAT and data["config"]["channels"] == TINY.channels
    monkeypatch.setattr(ac, "train_classifier", lambda *a, **k: pytest.fail("retrained a cached classifier"))
    again, _ = ac.ensure_classifier(root, TINY)
    x = torch.rand(4, 3, RES, RES) * 2 - 1
    torch.testing.assert_close(again.predict(x)[1], model.predict(x)[1])
    with pytest.raises(ValueError, match="resolution"):
        ac.ensure_classifier(root, ac.ClassifierConfig(resolution=16), path=path)
    path.with_name("junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pt"):
        qd.main(["--real", "--data_root", str(root), "--classifier", str(path.with_name("junk.pt"))])


def test_main_real_writes_json_table_and_grid(trained, tmp_path, capsys, monkeypatch):
    root, _, _ = trained
    monkeypatch.setattr(ac, "train_classifier", lambda *a, **k: pytest.fail("retrained a cached classifier"))
    out, grid = tmp_path / "q.json", tmp_path / "g.png"
    report = qd.main(["--real", "--device", "cpu", "--data_root", str(root), "--num_per_combo", "1",
                      "--max_seen_combos", "12", "--json", str(out), "--grid", str(grid)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    res = report["results"]
    assert (res["seen"]["n"], res["held_out"]["n"]) == (12, 54) and report["source"] == "real"
    text = capsys.readouterr().out
    for word in ("seen", "held-out", "chance", "FD_attr", *ATTRIBUTES):
        assert word in text
    from PIL import Image
    with Image.open(grid) as im:
        assert im.size == (6 * 66 + 2, 8 * 66 + 2)   # 6 seeds x (4 seen + 4 held-out) prompts of 64 px
    assert len(report["grid"]["rows"]) == 8


# ----------------------------------------------------------------------------------------------
# A variant scene set (two new colours): its own classifier and evaluation (issue 18).

def test_accuracy_by_value_counts_all_five_per_value():
    scenes = SceneSet(colours=("red", "blue", "cyan"))
    labels = torch.tensor([[0, 0, 0, 0, 0], [0, 2, 0, 0, 0], [1, 2, 1, 1, 1], [2, 1, 0, 0, 0]])
    pred = labels.clone()
    pred[1, 3] = 1                      # a cyan image with the wrong position
    out = ac.accuracy_by_value(pred, labels, scenes)
    assert out == {"shape": {"circle": 0.5, "square": 1.0, "triangle": 1.0}, "colour": {"red": 1.0, "blue": 1.0,
                                                                                        "cyan": 0.5}}


def test_a_variant_dataset_gets_its_own_classifier_and_evaluation(tmp_path):
    scenes = SceneSet(colours=BUILTIN.colours + ("cyan", "pink"))
    root = tmp_path / "variant"
    generate_demo_dataset(root, resolution=RES, num_images=120, scenes=scenes)
    cfg = dataclasses.replace(TINY, colour_dim=16, num_steps=100, lr=1e-2)
    model, _ = ac.ensure_classifier(root, cfg, verbose=False)
    assert model.cfg.scenes() == scenes and model.heads["colour"].out_features == 7
    new = [c for c in all_combinations(False, scenes) if c["colour"] in ("cyan", "pink")]
    combos = ac.with_jitter(new[::3], np.random.default_rng(0))
    pred, _ = model.predict(ac.render_real(combos, 64, RES))
    assert (pred[:, 1] == ac.labels_of(combos, scenes)[:, 1]).float().mean() > 0.9   # it reads the new colours
    res = qd.evaluate_generator(qd.real_generator(scenes=scenes), model, RES, num_per_combo=1, seed=0,
                                max_seen_combos=40)
    assert res["scenes"]["colours"] == list(scenes.colours) and res["chance"]["colour"] == pytest.approx(1 / 7)
    assert res["seen"]["n"] == 40 and res["held_out"]["n"] == 54
    assert set(res["seen"]["by_value"]["colour"]) <= set(scenes.colours)
    assert qd.parse_caption(caption_for(new[0]), scenes) == new[0]
    # A cached classifier of the built-in set is refused for this dataset.
    ac.save_classifier(ac.cache_path(root, RES), ac.AttributeClassifier(TINY), {})
    with pytest.raises(ValueError, match="other shapes or colours"):
        ac.ensure_classifier(root, TINY)
