"""Caption tokenizer: a sentencepiece model trained in memory on the dataset's captions.

The model lives only as bytes (stored in every checkpoint, docs/architecture.md "Text encoder"), so a
checkpoint alone is enough to tokenize exactly as in training. Ids are laid out as

    [bos, piece_1, ..., piece_k, eos, pad, ..., pad]        (length max_len)

with pad=0, unk=1, bos=2, eos=3; `mask` is True on bos, the pieces and eos.
"""
from __future__ import annotations

import io
import re
import warnings
from typing import Sequence

import sentencepiece as spm
import torch

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_MAX_VOCAB = 8000
_MIN_VOCAB = 32
_MAX_RETRIES = 4


class Tokenizer:
    """Wraps a sentencepiece model; lower-cases (NFKC + case folding) every caption."""

    def __init__(self,
        model_bytes:    bytes,          # Serialised sentencepiece ModelProto.
        max_len:        int,            # Length of every encoded row, bos and eos included.
    ):
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3 (bos + one piece + eos), got {max_len}")
        self._model_bytes = bytes(model_bytes)
        self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        self.max_len = int(max_len)
        self.vocab_size = int(self._sp.get_piece_size())
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
        special = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if special != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"sentencepiece model has pad/unk/bos/eos ids {special}, expected (0, 1, 2, 3)")
        self._warned_truncation = False

    @classmethod
    def train(cls,
        captions:       Sequence[str],      # Training corpus, one caption per item.
        max_len:        int = 32,           # Encoded length (bos + pieces + eos + padding).
        vocab_size:     int | None = None,  # None: scaled to the corpus, see `default_vocab_size`.
    ) -> "Tokenizer":
        """Train a BPE sentencepiece model on `captions`, entirely in memory.

        Deterministic (single thread, no sampling of the input). If sentencepiece reports the
        requested vocabulary as too large for a small corpus (or too small for its character
        set), the size it names as feasible is used instead.
        """
        corpus = [c.strip() for c in captions if c.strip()]
        if not corpus:
            raise ValueError("Tokenizer.train: no non-empty captions to train on")
        size = default_vocab_size(corpus) if vocab_size is None else int(vocab_size)
        for _ in range(_MAX_RETRIES):
            try:
                return cls(_train_sentencepiece(corpus, size), max_len)
            except RuntimeError as e:
                feasible = _feasible_vocab_size(str(e))
                if feasible is None or feasible == size:
                    raise
                size = feasible
        raise RuntimeError(f"Tokenizer.train: sentencepiece kept rejecting vocab sizes (last tried {size})")

    @classmethod
    def from_bytes(cls, model_bytes: bytes, max_len: int) -> "Tokenizer":
        return cls(model_bytes, max_len)

    def to_bytes(self) -> bytes:
        return self._model_bytes

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions: B strings -> (ids int64 [B, max_len], mask bool [B, max_len]).

        Captions longer than max_len - 2 pieces are cut; eos is always kept so the encoder
        sees where the caption ends. The first truncation warns once per Tokenizer.
        """
        if isinstance(captions, str):
            raise TypeError("Tokenizer.encode expects a sequence of captions, not one string")
        pieces = self._sp.encode(list(captions), out_type=int)
        ids = torch.full((len(pieces), self.max_len), self.pad_id, dtype=torch.int64)
        keep = self.max_len - 2
        for row, p in enumerate(pieces):
            if len(p) > keep:
                self._warn_truncation(len(p))
                p = p[:keep]
            ids[row, :len(p) + 2] = torch.tensor([self.bos_id, *p, self.eos_id], dtype=torch.int64)
        return ids, ids != self.pad_id

    def decode(self, ids: torch.Tensor) -> list[str]:
        """ids: [B, L] -> B normalised (lower-cased) strings; stops at the first eos."""
        assert ids.ndim == 2, ids.shape
        out = []
        for row in ids.tolist():
            if self.eos_id in row:
                row = row[:row.index(self.eos_id)]
            out.append(self._sp.decode([i for i in row if i not in (self.pad_id, self.bos_id)]))
        return out

    def _warn_truncation(self, num_pieces: int) -> None:
        if not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(f"caption of {num_pieces} pieces truncated to max_len={self.max_len} "
                          f"(bos + {self.max_len - 2} pieces + eos); further truncations are silent",
                          stacklevel=3)


def default_vocab_size(captions: Sequence[str]) -> int:
    """4 special ids + distinct characters (and the word-start mark) + total length of the
    distinct words, clamped to [32, 8000].

    BPE starts from characters and each merge adds one piece; a word is "▁" + its letters, so
    len(word) merges per word are enough for every word of a small corpus to become one piece
    (short sequences, whole-word meaning); the 8000 cap keeps pieces frequent on large corpora. Sentencepiece may still find
    fewer merges, in which case `Tokenizer.train` lowers the size.
    """
    words = {w for c in captions for w in c.lower().split()}
    chars = {ch for w in words for ch in w}
    merges = sum(len(w) for w in words)
    return min(_MAX_VOCAB, max(_MIN_VOCAB, 4 + len(chars) + 1 + merges))


def _train_sentencepiece(corpus: list[str], vocab_size: int) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",                       # Honours the requested size on small corpora (unigram under-fills it).
        normalization_rule_name="nmt_nfkc_cf",  # NFKC + case folding: "Red" and "red" are one piece.
        character_coverage=1.0,                 # Keep every character of the corpus (no <unk> in training text).
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        num_threads=1,                          # Deterministic EM.
        minloglevel=2,                          # Errors only; training chatter is not useful to users.
    )
    return buf.getvalue()


def _feasible_vocab_size(message: str) -> int | None:
    """The vocab size sentencepiece's error says would work, or None if it names none."""
    too_high = re.search(r"Vocabulary size too high.*?<=\s*(\d+)", message)
    if too_high:
        return int(too_high.group(1))
    too_low = re.search(r"smaller than required_chars\.\s*(\d+)\s*vs\s*(\d+)", message)
    if too_low:
        return int(too_low.group(2))
    return None
