"""A CLIP byte-level BPE tokenizer whose vocabulary is the toy world's caption words.

The files are the ones a Stable Diffusion ``tokenizer/`` folder holds (``vocab.json``, ``merges.txt``,
``tokenizer_config.json``, ``special_tokens_map.json``) and load with ``CLIPTokenizer.from_pretrained``.
The layout copies CLIP's: the 256 byte symbols, the same symbols with the end-of-word marker ``</w>``,
then one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (which is also the padding and
unknown token, as in SD 1.x). The merges are built so that every caption word is exactly one token;
any other word falls back to smaller pieces (down to single bytes), as with the real CLIP tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..toyworld.render import all_caption_words

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
EOW = "</w>"
#: Enough for the longest caption (clip templates: 9 words + the two special tokens).
MODEL_MAX_LENGTH = 16


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def _symbols(word: str) -> list[str]:
    """A word as CLIP's BPE starts it: one symbol per byte, the last one carrying ``</w>``."""
    table = bytes_to_unicode()
    chars = [table[b] for b in word.encode("utf-8")]
    return chars[:-1] + [chars[-1] + EOW]


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE: repeatedly merge the adjacent pair with the lowest rank."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def build_vocabulary(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)`` for a CLIP tokenizer in which each of ``words`` is a single token.

    Words are handled in sorted order; whenever a word does not yet reduce to one symbol, the merge of
    its first two remaining symbols is appended (as the lowest-priority merge, so it cannot change how
    the words already handled are split) until it does.
    """
    words = sorted({w.lower() for w in words})
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while True:
            pieces = _apply_merges(_symbols(word), ranks)
            if len(pieces) == 1:
                break
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    base = list(bytes_to_unicode().values())
    entries = base + [c + EOW for c in base] + ["".join(pair) for pair in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for entry in entries:
        vocab.setdefault(entry, len(vocab))
    return vocab, merges


def save_tokenizer_files(folder: str | Path, words: Iterable[str] | None = None, model_max_length: int = MODEL_MAX_LENGTH) -> Path:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocabulary(all_caption_words() if words is None else words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "do_lower_case": True,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return folder


def load_tokenizer(folder: str | Path):
    """``CLIPTokenizer.from_pretrained(folder)``, offline."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
