"""Text featurizer: transcript -> token ids + mask for the configured BERT-style encoder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodlens.core.assets import TEXT_ENCODER, resolve_path
from moodlens.core.errors import AssetError


# Files whose bytes identify a tokenizer's vocabulary, in the order they are looked for.
VOCABULARY_FILES = ("vocab.txt", "tokenizer.json", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


@dataclass
class TextEncoding:
    ids: np.ndarray    # (N, L) int64
    mask: np.ndarray   # (N, L) bool
    present: np.ndarray  # (N,) bool: False where the transcript had no words


class TextFeaturizer:
    """Tokenizes with the encoder's own tokenizer: tokenizer.json, vocab.txt for BERT folders, else whatever
    transformers' AutoTokenizer reads in the folder (its fast tokenizer is the same `tokenizers` object).
    `tokenizers` is used directly where it can be: it loads in milliseconds and keeps featurize workers
    free of transformers and torch."""

    def __init__(self, encoder_path: str | None = None, max_len: int = 50):
        from tokenizers import Tokenizer

        folder = resolve_path(TEXT_ENCODER, encoder_path)
        self.max_len = max_len
        tok_file = Path(folder) / "tokenizer.json"
        if tok_file.exists():
            self.tokenizer = Tokenizer.from_file(str(tok_file))
        elif (Path(folder) / "vocab.txt").exists():
            from tokenizers import BertWordPieceTokenizer

            self.tokenizer = BertWordPieceTokenizer(str(Path(folder) / "vocab.txt"), lowercase=True)
        else:  # other layouts (vocab.json + merges.txt, sentencepiece): transformers converts them
            self.tokenizer = _auto_tokenizer(Path(folder))
        self.folder = Path(folder)
        self.identity = tokenizer_identity(self.folder)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_len)
        self.pad_id = 0

    def encode(self, texts: list[str], length: int | None = None) -> TextEncoding:
        """Encode a list of transcripts, padded to `length` (default: the longest, capped at max_len)."""
        encs = self.tokenizer.encode_batch([t if t and t.strip() else "" for t in texts])
        present = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
        length = length or max([len(e.ids) for e in encs] + [2])
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=bool)
        for i, e in enumerate(encs):
            n = min(len(e.ids), length)
            ids[i, :n] = e.ids[:n]
            mask[i, :n] = True
        return TextEncoding(ids=ids, mask=mask, present=present)

    def text_bert(self, texts: list[str], length: int | None = None) -> np.ndarray:
        """MMSA's `text_bert` layout: (N, 3, L) int64 = [token ids, attention mask, token type ids]."""
        enc = self.encode(texts, length)
        return np.stack([enc.ids, enc.mask.astype(np.int64), np.zeros_like(enc.ids)], axis=1)


def tokenizer_identity(folder: str | Path) -> str:
    """sha256 (first 16 hex) of the encoder's vocabulary file: equal ids <=> equal identity,
    wherever the folder lives (paths differ between machines, vocabularies must not)."""
    folder = Path(folder)
    for name in VOCABULARY_FILES:
        if (folder / name).exists():
            return hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
    raise AssetError(f"The text encoder folder {folder} has no tokenizer ({', '.join(VOCABULARY_FILES)}).")


def _auto_tokenizer(folder: Path):
    """The `tokenizers.Tokenizer` behind transformers' AutoTokenizer for this folder."""
    tokenizer_identity(folder)  # refuses a folder without any vocabulary file, in one sentence
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True).backend_tokenizer
    except (OSError, ValueError, AttributeError) as err:
        reason = err.args[0].splitlines()[0] if err.args else type(err).__name__
        raise AssetError(f"The text encoder folder {folder} has a tokenizer transformers cannot read ({reason}).") from None
