"""Dataset converters: datasets/cifar10.py and datasets/captions.py, on small files made here."""
from __future__ import annotations

import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.converters import captions as cap
from stylegan_t2i.data.converters import cifar10


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _fake_cifar(path, num_per_batch=2, protocol=2, extra=None):
    """A cifar-10-python.tar.gz look-alike: 5 train batches + test batch + meta, tiny."""
    rng = np.random.default_rng(0)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for b, name in enumerate(names):
            data = rng.integers(0, 256, (num_per_batch, 3072), dtype=np.uint8)
            labels = [(b + j) % 10 for j in range(num_per_batch)]
            batches[name] = (data, labels)
            batch = {b"data": data, b"labels": labels, b"batch_label": name.encode()}
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=protocol))
        meta = {b"label_names": [n.encode() for n in cifar10.CLASS_NAMES], b"num_cases_per_batch": num_per_batch}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=protocol))
        if extra is not None:
            _add(tar, "cifar-10-batches-py/test_batch", extra)
    return batches


def test_class_captions_use_the_right_article():
    assert cifar10.captions_for_class("airplane")[:2] == ["a photo of an airplane", "an airplane"]
    assert "a small photo of an automobile" in cifar10.captions_for_class("automobile")
    assert cifar10.captions_for_class("cat")[:3] == ["a photo of a cat", "a cat", "a small photo of a cat"]


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_converts_every_split(tmp_path, protocol):
    batches = _fake_cifar(tmp_path / "c.tar.gz", protocol=protocol)
    cifar10.main(["--archive", str(tmp_path / "c.tar.gz"), "--out", str(tmp_path / "out"), "--split", "both"])
    img = np.asarray(Image.open(tmp_path / "out/images/train/00003.png"))
    data, labels = batches["data_batch_2"]  # train index 3 = second image of the second batch
    assert np.array_equal(img, data[1].reshape(3, 32, 32).transpose(1, 2, 0))
    text = (tmp_path / "out/labels/train/00003.txt").read_text().splitlines()
    assert text == cifar10.captions_for_class(cifar10.CLASS_NAMES[labels[1]])
    assert len(list((tmp_path / "out/images/train").glob("*.png"))) == 10
    assert len(list((tmp_path / "out/labels/test").glob("*.txt"))) == 2
    ds = ImageLabelDataset(tmp_path / "out/images", tmp_path / "out/labels", 32, verbose=False)
    assert len(ds) == 12 and ds.names[0] == "test/00000"


def test_cifar10_refuses_code_and_bad_archives(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    _fake_cifar(tmp_path / "evil.tar.gz", extra=pickle.dumps({b"data": Evil()}))
    with pytest.raises(SystemExit, match="refusing to load"):
        cifar10.main(["--archive", str(tmp_path / "evil.tar.gz"), "--out", str(tmp_path / "o"), "--split", "test"])
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(SystemExit, match="junk.tar.gz"):
        cifar10.main(["--archive", str(tmp_path / "junk.tar.gz"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no such file"):
        cifar10.main(["--archive", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "o")])


def _images(folder, names):
    for n in names:
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(n) * 20 % 256, 0, 0)).save(folder / n)


def test_captions_from_coco_json(tmp_path, capsys):
    _images(tmp_path / "src", ["a.jpg", "sub/b.png", "nocap.png"])
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "sub/b.png"},
                       {"id": 3, "file_name": "gone.jpg"}, {"id": 4, "file_name": "nocap.png"},
                       {"id": 5, "file_name": "../escape.png"}],
            "annotations": [{"image_id": 1, "caption": "A dog\non grass. "}, {"image_id": 1, "caption": "a second one"},
                            {"image_id": 2, "caption": "b"}, {"image_id": 3, "caption": "lost"},
                            {"image_id": 5, "caption": "x"}, {"image_id": 99, "caption": "orphan"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    cap.main(["--captions", str(tmp_path / "c.json"), "--images", str(tmp_path / "src"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "Wrote 2 images with 3 captions" in out and "gone.jpg" in out and "nocap.png" in out
    assert (tmp_path / "out/labels/a.txt").read_text() == "A dog on grass.\na second one\n"
    assert (tmp_path / "out/images/sub/b.png").read_bytes() == (tmp_path / "src/sub/b.png").read_bytes()
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "out/images/nocap.png").exists()
    report = cap.convert_captions(tmp_path / "c.json", tmp_path / "src", tmp_path / "out")  # re-run: overwrites
    assert {k: len(v) for k, v in report.skipped.items()} == {"caption of an unknown image_id": 1, "missing image": 1,
                                                             "no caption": 1, "name outside the image folder": 1}
    ds = ImageLabelDataset(tmp_path / "out/images", tmp_path / "out/labels", 8, verbose=False)
    assert ds.names == ["a", "sub/b"] and ds.captions[0] == ["A dog on grass.", "a second one"]


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_captions_from_table(tmp_path, suffix, sep):
    _images(tmp_path / "src", ["x.png", "y.png"])
    rows = ["Image" + sep + "caption", f"x.png{sep}first", f"y.png{sep}only y", f"x.png{sep}second", f"z.png{sep}missing"]
    (tmp_path / f"c{suffix}").write_text("\n".join(rows) + "\n")
    report = cap.convert_captions(tmp_path / f"c{suffix}", tmp_path / "src", tmp_path / "out")
    assert (report.num_images, report.num_captions, report.skipped) == (2, 3, {"missing image": ["z.png"]})
    assert (tmp_path / "out/labels/x.txt").read_text() == "first\nsecond\n"


def test_captions_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "bad.csv").write_text("file,text\na.png,hello\n")
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"id": 1}]}))
    (tmp_path / "bad.txt").write_text("?")
    for name, match in (("bad.csv", "image,caption"), ("bad.json", "COCO"), ("bad.txt", "unknown captions format")):
        with pytest.raises(SystemExit, match=match):
            cap.main(["--captions", str(tmp_path / name), "--images", str(tmp_path / "src"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="--images"):
        cap.main(["--captions", str(tmp_path / "bad.csv"), "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
