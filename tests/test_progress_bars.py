"""Every long step shows a tqdm bar on stderr when its flag asks for one, and writes nothing there
when it does not: the image cache build, text-encoder pretraining and evaluation (generation,
features, SWD, alignment). tools/compare.py's bars: tests/test_evaluate.py; tools/sweep_ddpm.py's:
tests/test_sweep_ddpm.py.

One torch thread for the whole session comes from tests/conftest.py.
"""
import dataclasses
import warnings

import pytest

from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.evaluation import EvalConfig, evaluate_sampler
from stylegan_t2i.inference import DEMO_MODEL, load_sampler
from stylegan_t2i.text.pretrain import PretrainConfig, pretrain_text_encoder

RES = 8
TINY_TEXT = PretrainConfig(resolution=RES, batch=8, steps=3, warmup=1, max_len=16, text_dim=16, text_depth=1,
                           text_heads=2, embed_dim=16, image_channels=(8,))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return generate_demo_dataset(tmp_path_factory.mktemp("data"), resolution=32, num_images=12)


def test_image_cache_build(dirs, tmp_path, capsys):
    ImageLabelDataset(*dirs, RES, cache_dir=tmp_path / "a", verbose=True)
    assert "Caching images at 8x8: 100%" in capsys.readouterr().err
    ImageLabelDataset(*dirs, RES, cache_dir=tmp_path / "b", verbose=False)
    assert capsys.readouterr().err == ""


def test_text_encoder_pretraining(dirs, capsys):
    dataset = ImageLabelDataset(*dirs, RES, cache_dir=None, verbose=False)
    pretrain_text_encoder(dataset, TINY_TEXT, "cpu", progress=True)
    err = capsys.readouterr().err
    assert "text encoder: 100%" in err and "3/3" in err
    pretrain_text_encoder(dataset, TINY_TEXT, "cpu", progress=False)
    assert capsys.readouterr().err == ""


def test_evaluation_generation_features_swd_and_alignment(dirs, capsys):
    """The demo GAN (32 px) on 8 images: each scoring step has its bar; none without progress,
    and no warning either way on the CPU."""
    sampler = load_sampler(DEMO_MODEL)
    dataset = ImageLabelDataset(*dirs, 32, verbose=False)
    cfg = EvalConfig(num=8, batch=8, metrics=("fd", "swd", "align"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_sampler(sampler, dataset, cfg, "cpu", progress=True)
        err = capsys.readouterr().err
        for bar in ("generating (gan): 100%", "features (encoder): 100%", "swd: 100%", "alignment: 100%"):
            assert bar in err, (bar, err)
        evaluate_sampler(sampler, dataset, dataclasses.replace(cfg, seed=1), "cpu", progress=False)
        assert capsys.readouterr().err == ""
