"""Text Transformer and image CNN: shapes, padding invariance, masking, resizing."""
import pytest
import torch

from stylegan_t2i.text.encoder import TextEncoder, TextEncoderConfig
from stylegan_t2i.text.image_encoder import ImageEncoder, ImageEncoderConfig
from stylegan_t2i.text.tokenizer import Tokenizer

CORPUS = [f"a {s} {c} {shape} on the {p}" for s in ("small", "large") for c in ("red", "green", "blue")
          for shape in ("circle", "square") for p in ("left", "right")]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TextEncoder(TextEncoderConfig(vocab_size=64, max_len=32, dim=32, depth=2, heads=4, embed_dim=24)).eval()


def test_shapes(encoder):
    ids = torch.randint(4, 64, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    tokens, sentence = encoder(ids, mask)
    assert tokens.shape == (3, 10, 32) and sentence.shape == (3, 24)
    # Final LayerNorm (unit gain, zero bias at init): zero mean, unit variance per token.
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(3, 10), atol=1e-5, rtol=0)
    with pytest.raises(AssertionError):
        encoder(torch.randint(4, 64, (1, 33)), torch.ones(1, 33, dtype=torch.bool))


def test_padding_invariance_across_max_len(encoder):
    caps = ["a small red circle on the left", "a large blue square"]
    tok16, tok32 = Tokenizer.train(CORPUS, max_len=16), Tokenizer.train(CORPUS, max_len=32)
    (ids16, m16), (ids32, m32) = tok16.encode(caps), tok32.encode(caps)
    assert torch.equal(m16.sum(1), m32.sum(1))
    t16, s16 = encoder(ids16, m16)
    t32, s32 = encoder(ids32, m32)
    torch.testing.assert_close(t16[m16], t32[m32], atol=1e-5, rtol=0)
    torch.testing.assert_close(s16, s32, atol=1e-5, rtol=0)


def test_pad_token_values_do_not_leak(encoder):
    # Whatever ids sit at padded positions, real positions and the sentence are unchanged.
    ids = torch.randint(4, 64, (2, 12))
    mask = torch.arange(12)[None, :] < torch.tensor([[5], [9]])
    noisy = torch.where(mask, ids, torch.randint(4, 64, ids.shape))
    (ta, sa), (tb, sb) = encoder(ids, mask), encoder(noisy, mask)
    torch.testing.assert_close(ta[mask], tb[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(sa, sb, atol=1e-5, rtol=0)


def test_sentence_is_projection_of_masked_mean(encoder):
    ids = torch.randint(4, 64, (2, 8))
    mask = torch.arange(8)[None, :] < torch.tensor([[3], [8]])
    tokens, sentence = encoder(ids, mask)
    expected = torch.stack([tokens[0, :3].mean(0), tokens[1].mean(0)]) @ encoder.proj.weight.t() + encoder.proj.bias
    torch.testing.assert_close(sentence, expected, atol=1e-5, rtol=1e-5)


def test_every_token_gets_gradient(encoder):
    ids = torch.randint(4, 64, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    enc = TextEncoder(encoder.cfg)
    enc(ids, mask)[1].square().sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_image_encoder_shapes_and_resize():
    torch.manual_seed(0)
    enc = ImageEncoder(ImageEncoderConfig(resolution=16, channels=(8, 16), embed_dim=12)).eval()
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    assert enc(img).shape == (2, 12)
    # Other sizes are resized first: a flat colour stays exactly that colour at any size.
    colour = torch.tensor([0.5, -0.25, 1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(enc(colour.expand(1, 3, 40, 40)), enc(colour.expand(1, 3, 16, 16)), atol=1e-5, rtol=1e-5)
    # Antialiased: a 2x checkerboard is averaged to (nearly) flat grey inside the image, not aliased.
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1).float().expand(1, 3, 32, 32)
    small = torch.nn.functional.interpolate(checker, size=(16, 16), mode="bilinear", antialias=True)
    assert small[..., 1:-1, 1:-1].abs().max() < 1e-6
    torch.testing.assert_close(enc(checker), enc(small), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        ImageEncoder(ImageEncoderConfig(resolution=18, channels=(8, 16)))
