"""Hard negatives of the matching-aware term: never the caption itself or one that says the same
thing, mostly captions that change one attribute, the same candidates on every rank, and of those
the ones the critic scores highest."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from stylegan_t2i.gan.negatives import CaptionPool, hardest

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
    pool = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), candidates=10, max_similarity=0.95)
    batch = [caps[i % 2] for i, caps in enumerate(per_image)]
    return pool, batch


def _nearest(pool, batch):
    unit = F.normalize(AttributeEncoder().encode(batch)[2], dim=1)
    return pool.nearest(batch, unit)


def test_pool_holds_each_distinct_caption_once(pool_and_captions):
    pool, _ = pool_and_captions
    assert len(pool) == len(_combos()) * len(TEMPLATES) == len(set(pool.captions))
    assert pool.sentence.shape == (len(pool), 8)
    torch.testing.assert_close(pool.unit.norm(dim=1), torch.ones(len(pool)))


def test_never_the_caption_itself_nor_one_that_says_the_same(pool_and_captions):
    pool, batch = pool_and_captions
    idx, valid = _nearest(pool, batch)
    assert idx.shape == valid.shape == (len(batch), 10) and valid.all()
    for caption, row in zip(batch, idx.tolist()):
        for j in row:
            assert pool.captions[j] != caption
            assert _attrs_of(pool.captions[j]) != _attrs_of(caption)   # no paraphrase


def test_negatives_are_the_nearest_ones_and_cover_the_shape_word(pool_and_captions):
    pool, batch = pool_and_captions
    idx, _ = _nearest(pool, batch)
    changed = []
    for caption, row in zip(batch, idx.tolist()):
        for j in row:
            diff = [k for k, a, b in zip(ATTRS, _attrs_of(caption), _attrs_of(pool.captions[j])) if a != b]
            assert len(diff) == 1, (caption, pool.captions[j])   # the 10 nearest all change one word
            changed.append(diff[0])
    assert {"shape", "colour", "background"} <= set(changed)
    assert changed.count("shape") >= len(changed) // 5


def test_candidates_do_not_depend_on_the_rng(pool_and_captions):
    pool, batch = pool_and_captions
    torch.manual_seed(3)
    a, _ = _nearest(pool, batch)
    torch.manual_seed(4)
    b, _ = _nearest(pool, batch)
    assert torch.equal(a, b)


def test_a_caption_with_nothing_different_gets_no_valid_negative():
    per_image = [["a red circle on black", "black image, red circle"]]      # one meaning only
    pool = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), candidates=4)
    idx, valid = _nearest(pool, ["a red circle on black"])
    assert idx.shape == (1, 2) and not valid.any()      # k is capped by the pool's size


def test_pool_is_capped_by_a_seeded_subset():
    per_image = [[t.format(**c) for t in TEMPLATES] for c in _combos()]
    a = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), max_pool=7, seed=1)
    b = CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), max_pool=7, seed=1)
    assert len(a) == 7 and a.captions == b.captions
    with pytest.raises(ValueError, match="candidates"):
        CaptionPool(per_image, AttributeEncoder(), torch.device("cpu"), candidates=0)


def test_hardest_keeps_the_highest_valid_scores_and_their_gradient():
    scores = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5],
                           [5.0, 4.0, 3.0, 2.0, 1.0]], requires_grad=True)
    valid = torch.tensor([[True, True, True, False, True],      # 3.0 is not a valid candidate
                          [False, True, True, True, True]])
    kept, kept_valid = hardest(scores, valid, per_image=2)
    torch.testing.assert_close(kept.detach(), torch.tensor([[2.0, 0.5], [4.0, 3.0]]))
    assert kept_valid.all()
    kept.sum().backward()
    torch.testing.assert_close(scores.grad, torch.tensor([[0.0, 1, 0, 0, 1], [0, 1, 1, 0, 0]]))


def test_hardest_marks_missing_negatives_invalid():
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    valid = torch.tensor([[True, False, False], [False, False, False]])
    kept, kept_valid = hardest(scores, valid, per_image=2)
    assert kept.shape == kept_valid.shape == (2, 2)
    assert kept_valid.tolist() == [[True, False], [False, False]] and kept[0, 0] == 1.0
    with pytest.raises(ValueError, match="per_image"):
        hardest(scores, valid, per_image=0)
