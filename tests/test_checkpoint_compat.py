"""A checkpoint written by the first version's code (commit 5c88055: ProGAN-style networks, no
direct caption part of w, the rolled matching term) still loads, generates and resumes.

`tests/data/gan-5c88055.pt` is a tiny 8 px training checkpoint (stage 1, every network and
optimizer) that the code of that commit wrote, on `generate_demo_dataset(root, 16, 32)` data,
with `tests/data/make_gan_5c88055.py` run inside a checkout of 5c88055.
"""
from pathlib import Path

import torch

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.config import config_from_dict
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.inference import load_sampler
from stylegan_t2i.models.generator import Generator, GeneratorConfig

OLD = Path(__file__).resolve().parent / "data" / "gan-5c88055.pt"


def test_old_checkpoint_generates():
    data = load_checkpoint(OLD, kinds="gan")
    assert "architecture" not in data["config"]["generator"]           # really written before the change
    sampler = load_sampler(OLD, "cpu")
    assert sampler.G.cfg.architecture == "orig" and sampler.G.cfg.text_w_dim == 0
    img = sampler.sample(["a small red circle on the left on a black background"] * 2, [0, 1])
    assert img.shape == (2, 3, 8, 8) and torch.isfinite(img).all()


def test_old_checkpoint_resumes_and_keeps_its_networks(tmp_path):
    image_dir, label_dir = generate_demo_dataset(tmp_path / "data", resolution=16, num_images=32)
    old = load_checkpoint(OLD, kinds="gan")
    final = train_progan.main(["--image_dir", str(image_dir), "--label_dir", str(label_dir),
                               "--resume", str(OLD), "--total_kimg", "0.056", "--device", "cpu",
                               "--out", str(tmp_path / "runs")])
    new = load_checkpoint(final, kinds="gan")
    assert new["progress"]["nimg"] > old["progress"]["nimg"]
    assert new["config"]["generator"]["architecture"] == "orig"          # the old networks, continued
    # The same networks, less the global mean w that was never updated (see MappingNetwork).
    assert new["G"].keys() == old["G"].keys() - {"mapping_net.w_avg"} and new["D"].keys() == old["D"].keys()
    assert any(not torch.equal(new["G"][k], old["G"][k]) for k in new["G"])
    assert "w_avg_beta" not in new["config"]["generator"] and "fingerprint" in new["config"]["data"]


def test_old_generator_state_dicts_load_strictly():
    """What `GanTrainer.load_payload` and the sampler do with them: strict loads, the old
    `w_avg` buffer and `w_avg_beta` config key dropped."""
    old = load_checkpoint(OLD, kinds="gan")
    assert "mapping_net.w_avg" in old["G"] and "w_avg_beta" in old["config"]["generator"]
    G = Generator(config_from_dict(GeneratorConfig, old["config"]["generator"]))
    for net in ("G", "G_ema"):
        G.load_state_dict(old[net], strict=True)
        kept = {k: v for k, v in old[net].items() if k != "mapping_net.w_avg"}
        assert all(torch.equal(v, kept[k]) for k, v in G.state_dict().items()) and G.state_dict().keys() == kept.keys()
