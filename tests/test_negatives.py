"""Hard negatives of the matching-aware term: never the caption itself or one that says the same
thing, mostly captions that change one attribute, the same draw on every rank."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from stylegan_t2i.gan.negatives import CaptionPool

ATTRS = {"shape": ("circle", "square", "triangle"), "colour": ("red", "green", "blue"),
         "background": ("black", "white")}
TEMPLATES = ("a {colour} {shape} on {background}", "{background} image, {colour} {shape}")


def _combos():
    return [dict(zip(ATTRS, values)) for values in itertools.product(*ATTRS.values())]


def _attrs_of(caption: str) -> tuple:
    words = set(caption.replace(",", "").split())
    return tuple(next(v for v in values if v in words) for values in ATTRS.values())


class AttributeEncoder:
    """Stands in for the frozen text encoder: a caption's embedding is the one-hot code of its
    attributes, so paraphrases have cosine 1 and one changed attribute cosine 2/3."""

    def encode(self, captions, device=None):
        rows = []
        for caption in captions:
            attrs = _attrs_of(caption)
            rows.append(torch.cat([F.one_hot(torch.tensor(values.index(a)), len(values)).float()
                                   for a, values in zip(attrs, ATTRS.values())]))
        sentence = torch.stack(rows)
        return None, None, sentence


@pytest.fixture()
def pool_and_captions():
    per_image = [[t.format(**c) for t in TEMPLATES] for c in _combos()]
    # 4 one-attribute neighbours per combination (2 shapes + 2 colours + 1 background = 5), x 2 templates.
    pool = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), per_image=6, candidates=10,
                       max_similarity=0.95)
    batch = [caps[i % 2] for i, caps in enumerate(per_image)]
    return pool, batch


def _draw(pool, batch, seed=0):
    unit = F.normalize(AttributeEncoder().encode(batch)[2], dim=1)
    torch.manual_seed(seed)
    return pool.draw(batch, unit)


def test_pool_holds_each_distinct_caption_once(pool_and_captions):
    pool, _ = pool_and_captions
    assert len(pool) == len(_combos()) * len(TEMPLATES) == len(set(pool.captions))
    assert pool.sentence.shape == (len(pool), 8)
    torch.testing.assert_close(pool.unit.norm(dim=1), torch.ones(len(pool)))


def test_never_the_caption_itself_nor_one_that_says_the_same(pool_and_captions):
    pool, batch = pool_and_captions
    for seed in range(5):
        idx, valid = _draw(pool, batch, seed)
        assert idx.shape == valid.shape == (len(batch), 6) and valid.all()
        for caption, row in zip(batch, idx.tolist()):
            for j in row:
                assert pool.captions[j] != caption
                assert _attrs_of(pool.captions[j]) != _attrs_of(caption)   # no paraphrase


def test_negatives_are_the_nearest_ones_and_cover_the_shape_word(pool_and_captions):
    pool, batch = pool_and_captions
    idx, _ = _draw(pool, batch)
    changed = []
    for caption, row in zip(batch, idx.tolist()):
        for j in row:
            diff = [k for k, a, b in zip(ATTRS, _attrs_of(caption), _attrs_of(pool.captions[j])) if a != b]
            assert len(diff) == 1, (caption, pool.captions[j])   # the 10 nearest all change one word
            changed.append(diff[0])
    assert {"shape", "colour", "background"} <= set(changed)
    assert changed.count("shape") >= len(changed) // 5


def test_same_rng_state_same_draw_and_different_state_differs(pool_and_captions):
    pool, batch = pool_and_captions
    a, _ = _draw(pool, batch, seed=3)
    b, _ = _draw(pool, batch, seed=3)
    c, _ = _draw(pool, batch, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_caption_with_nothing_different_gets_no_valid_negative():
    per_image = [["a red circle on black", "black image, red circle"]]      # one meaning only
    pool = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), per_image=3, candidates=4)
    idx, valid = _draw(pool, ["a red circle on black"])
    assert idx.shape == (1, 3) and not valid.any()


def test_pool_is_capped_by_a_seeded_subset():
    per_image = [[t.format(**c) for t in TEMPLATES] for c in _combos()]
    a = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), max_pool=7, seed=1)
    b = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), max_pool=7, seed=1)
    assert len(a) == 7 and a.captions == b.captions
    with pytest.raises(ValueError, match="per_image"):
        CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), per_image=0)
