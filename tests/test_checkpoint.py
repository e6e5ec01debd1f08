import os
import pickle
from dataclasses import dataclass
from unittest import mock

import pytest
import torch

from stylegan_t2i.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.config import config_from_dict, config_to_dict
from stylegan_t2i.run_dir import create_run_dir, latest_run_dir, run_dirs
from stylegan_t2i.training.stats import RunningMeans


def test_round_trip_plain_data(tmp_path):
    payload = {"G": {"w": torch.arange(6.0).reshape(2, 3)}, "progress": {"nimg": 123, "alpha": 0.5},
               "tokenizer": b"\x00\x01bytes", "names": ["a", "b"]}
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", "gan", payload)
    data = load_checkpoint(path, kinds="gan")
    assert data["kind"] == "gan" and data["version"] == FORMAT_VERSION
    torch.testing.assert_close(data["G"]["w"], payload["G"]["w"])
    assert data["tokenizer"] == payload["tokenizer"] and data["progress"] == payload["progress"]
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", "gan", {"v": torch.tensor(1)})
    with mock.patch("torch.save", side_effect=OSError(28, "No space left on device")):
        with pytest.raises(OSError):
            save_checkpoint(path, "gan", {"v": torch.tensor(2)})
    assert load_checkpoint(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format": "stylegan_t2i", "x": _Evil()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)


@pytest.mark.parametrize("content, match", [
    (b"", "not a readable checkpoint"),
    (b"hello, not a checkpoint", "not a readable checkpoint"),
])
def test_garbage_files_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_wrong_kind_newer_version_foreign_and_missing(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", "ddpm", {})
    with pytest.raises(CheckpointError, match="kind 'ddpm'"):
        load_checkpoint(path, kinds=("gan", "text_encoder"))
    torch.save({"format": "stylegan_t2i", "version": FORMAT_VERSION + 1, "kind": "gan"}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "b.pt")
    torch.save({"state_dict": {}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="not a stylegan_t2i checkpoint"):
        load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


@dataclass(frozen=True)
class _Cfg:
    a: int = 1
    b: tuple = (1, 2)


def test_config_round_trip_and_unknown_keys():
    cfg = _Cfg(a=3, b=(4, 5))
    assert config_from_dict(_Cfg, config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        config_from_dict(_Cfg, {"a": 1, "c": 2})


def test_run_dirs_are_numbered(tmp_path):
    assert latest_run_dir(tmp_path) is None
    a = create_run_dir(tmp_path, "demo-32")
    (tmp_path / "not-a-run").mkdir()
    b = create_run_dir(tmp_path, "demo-64")
    assert (a.name, b.name) == ("00000-demo-32", "00001-demo-64")
    assert run_dirs(tmp_path) == [a, b] and latest_run_dir(tmp_path) == b


def test_running_means_average_and_sum_faults():
    m = RunningMeans()
    m.add({"Loss/D": torch.tensor(1.0), "Faults/nonfinite_steps": 1})
    m.add({"Loss/D": 3.0, "Faults/nonfinite_steps": 1})
    assert m.flush() == {"Loss/D": 2.0, "Faults/nonfinite_steps": 2.0}
    assert m.flush() == {}
