"""Writes tests/data/gan-5c88055.pt with the first version's own code (not this checkout's):

    git worktree add /tmp/old5c 5c88055 && cd /tmp/old5c && PYTHONPATH=. python /path/to/make_gan_5c88055.py OUT

PYTHONPATH=. puts the old checkout's own modules (its top-level train_progan.py, datasets/ and
stylegan_t2i/) ahead of an installed copy. OUT/gan-5c88055.pt is then the fixture of
tests/test_checkpoint_compat.py.
"""
import importlib
import shutil
import sys
from pathlib import Path

from datasets.demo_scenes import generate_demo_dataset
from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.models.critic import CriticConfig
from stylegan_t2i.models.generator import GeneratorConfig
from stylegan_t2i.text.pretrain import PretrainConfig, pretrain_text_encoder, save_text_encoder

train_progan = importlib.import_module("train_progan")     # The old checkout's script (this tree has none of it).

# Tiny networks keep the file small; everything else is the first version's own training path.
train_progan.cpu_demo_configs = lambda text_dim, max_res: (
    GeneratorConfig(text_dim=text_dim, max_res=max_res, z_dim=8, z_embed_dim=4, text_embed_dim=8, w_dim=16,
                    mapping_layers=2, channel_base=64, channel_max=8, conv_clamp=None),
    CriticConfig(text_dim=text_dim, max_res=max_res, channel_base=64, channel_max=8, cmap_dim=8, conv_clamp=None))
root = Path(sys.argv[1])
img, lab = generate_demo_dataset(root / "data", resolution=16, num_images=32)
ds = ImageLabelDataset(img, lab, 16, verbose=False)
cfg = PretrainConfig(resolution=16, batch=16, steps=4, warmup=1, text_dim=32, text_depth=1, text_heads=2,
                     embed_dim=32, image_channels=(8, 16, 16), max_len=24)
bundle = pretrain_text_encoder(ds, cfg, "cpu", progress=False)
save_text_encoder(root / "te.pt", bundle, cfg)
final = train_progan.main(["--image_dir", str(img), "--label_dir", str(lab), "--text_encoder", str(root / "te.pt"),
                           "--max_res", "8", "--batch", "8", "--kimg_per_stage", "0.016", "--total_kimg", "0.040",
                           "--snapshot_kimg", "1", "--seed", "3", "--device", "cpu", "--out", str(root / "runs")])
shutil.copy(final, root / "gan-5c88055.pt")
print(final, (root / "gan-5c88055.pt").stat().st_size)
