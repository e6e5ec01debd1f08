"""Tokenizer: sentencepiece trained in memory, fixed special-id layout, truncation, serialisation."""
import warnings

import pytest
import torch

from stylegan_t2i.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, default_vocab_size

COLOURS = ["red", "green", "blue", "yellow", "white", "purple"]
SHAPES = ["circle", "square", "triangle"]
CORPUS = [f"A {size} {c} {s} on the {pos}" for c in COLOURS for s in SHAPES
          for size in ("small", "large") for pos in ("left", "right")]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, max_len=16)


def test_special_ids_and_vocab(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    words = {w for c in CORPUS for w in c.lower().split()}
    assert default_vocab_size(CORPUS) == 4 + 21 + 1 + sum(len(w) for w in words)
    assert default_vocab_size(["a b"]) == 32
    assert 4 < tok.vocab_size <= default_vocab_size(CORPUS)
    # Enough merges that seen words are whole pieces: bos + 7 words + eos.
    assert int(tok.encode(["a small red circle on the left"])[1].sum()) == 9


def test_round_trip_lower_cases(tok):
    caps = ["A Small RED circle on the left", "a large blue Triangle on the right"]
    ids, mask = tok.encode(caps)
    assert tok.decode(ids) == [c.lower() for c in caps]


def test_layout_bos_pieces_eos_pad(tok):
    ids, mask = tok.encode(["red circle", "a small green square on the left"])
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool and ids.shape == mask.shape == (2, 16)
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert bool(m[:n].all()) and not bool(m[n:].any())     # Real tokens form a prefix.
        assert row[0] == BOS_ID and row[n - 1] == EOS_ID
        assert bool((row[n:] == PAD_ID).all())
        assert not bool(((row[1:n - 1] == BOS_ID) | (row[1:n - 1] == EOS_ID) | (row[1:n - 1] == PAD_ID)).any())
    assert mask[0].sum() < mask[1].sum()


def test_bytes_round_trip_gives_identical_ids(tok):
    clone = Tokenizer.from_bytes(tok.to_bytes(), max_len=16)
    caps = ["a purple square on the right", "zebra"]
    assert clone.vocab_size == tok.vocab_size
    assert torch.equal(clone.encode(caps)[0], tok.encode(caps)[0])


def test_training_is_deterministic():
    assert Tokenizer.train(CORPUS).to_bytes() == Tokenizer.train(CORPUS).to_bytes()


def test_truncation_keeps_eos_and_warns_once():
    tok = Tokenizer.train(CORPUS, max_len=6)
    long = "a small red circle on the left a large blue square on the right"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = tok.encode([long, long])
        tok.encode([long])
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    assert bool(mask.all()) and bool((ids[:, 0] == BOS_ID).all()) and bool((ids[:, -1] == EOS_ID).all())
    # The kept pieces are the caption's first max_len - 2 pieces: the decoded text is a prefix.
    assert long.startswith(tok.decode(ids)[0]) and len(tok.decode(ids)[0]) > 0


def test_tiny_corpus():
    tok = Tokenizer.train(["A red circle", "a Blue square on the left"])
    assert tok.decode(tok.encode(["a blue circle"])[0]) == ["a blue circle"]
    with pytest.raises(ValueError):
        Tokenizer.train(["", "   "])
