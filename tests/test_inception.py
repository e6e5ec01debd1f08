"""InceptionV3 (pytorch-fid FID layout): strict weights-only loading and 2048-d features."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylegan_t2i.metrics import InceptionV3, load_inception, make_feature_extractor
from stylegan_t2i.metrics.inception import _check_state_dict


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """A randomly initialised model's state dict, saved once as the weights file would be."""
    torch.manual_seed(0)
    model = InceptionV3()
    state = model.state_dict()
    path = tmp_path_factory.mktemp("inception") / "pt_inception-test.pth"
    torch.save(state, path)
    return path, state


def test_state_dict_layout_matches_pytorch_fid_keys(saved_state):
    _, state = saved_state
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["fc.weight"].shape == (1008, 2048)
    assert "Conv2d_1a_3x3.conv.bias" not in state and not any(k.startswith("AuxLogits") for k in state)
    # 94 BasicConv2d (conv weight + 5 BatchNorm entries each) + fc weight and bias.
    assert len(state) == 94 * 6 + 2
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")
               and "running" not in k) == 23_850_960


def test_load_and_extract_features(saved_state):
    path, state = saved_state
    extractor = make_feature_extractor(inception_path=path)
    for key, value in extractor.module.state_dict().items():
        assert torch.equal(value, state[key]), key
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    feats = extractor(img)
    assert extractor.name == "inception" and not extractor.module.training
    assert feats.shape == (2, 2048) and feats.isfinite().all()
    assert (feats >= 0).all() and not torch.equal(feats[0], feats[1])    # Mean of ReLU outputs.


def test_missing_num_batches_tracked_is_accepted(saved_state):
    _, state = saved_state
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    with torch.device("meta"):
        model = InceptionV3()
    filled = _check_state_dict(old_style, model, Path("old.pth"))
    assert filled.keys() == state.keys()
    model.load_state_dict(filled, strict=True, assign=True)
    assert torch.equal(model.Mixed_6b.branch7x7_2.conv.weight, state["Mixed_6b.branch7x7_2.conv.weight"])


def test_mismatched_state_dict_gives_one_clear_error(saved_state, tmp_path):
    _, state = saved_state
    broken = dict(state)
    del broken["Mixed_5b.branch_pool.bn.running_var"]
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    expected = r"broken\.pth.*missing 1 \('Mixed_5b\.branch_pool\.bn\.running_var'\)"
    with pytest.raises(ValueError, match=expected):
        load_inception(path)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_inception(tmp_path / "nothere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        load_inception(tmp_path / "junk.pth")


def test_random_bytes_give_one_line_value_error(tmp_path):
    """Random bytes make torch.load raise UnpicklingError, KeyError or UnicodeDecodeError
    (seeds 0, 3 and 5 with torch 2.x); each must become one ValueError naming the file."""
    for seed in range(8):
        junk = torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        path = tmp_path / f"random-{seed}.pth"
        path.write_bytes(junk.numpy().tobytes())
        with pytest.raises(ValueError, match=f"random-{seed}\\.pth: cannot be read") as e:
            load_inception(path)
        assert "\n" not in str(e.value), str(e.value)
