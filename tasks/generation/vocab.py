"""A CLIP-format BPE vocabulary made locally, so a miniature model needs no download.

CLIP's tokenizer is byte-level BPE: every byte is mapped to a printable unicode
character (printable Latin-1 bytes to themselves, the rest to U+0100 onwards), words
end with ``</w>``, and the vocabulary is the 256 byte characters, the same with
``</w>``, one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
We build exactly that, with merges learned from a caption corpus by the textbook BPE
loop (most frequent adjacent pair, ties broken by the pair's text: deterministic).
The files (``vocab.json``, ``merges.txt``) load with transformers' ``CLIPTokenizer``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP's pre-tokenizer (contractions, letter runs, single digits, punctuation runs) for plain text.
_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.UNICODE)


def byte_alphabet() -> dict[int, str]:
    """Byte -> printable character, CLIP/GPT-2 style: printable bytes stay, others move past U+00FF."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in keep + [b for b in range(256) if b not in keep]}


def split_words(text: str) -> list[str]:
    return _WORDS.findall(" ".join(text.lower().split()))


def learn_merges(corpus: Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """Up to ``num_merges`` BPE merges; stops early once no pair occurs twice."""
    alphabet = byte_alphabet()
    words: Counter[tuple[str, ...]] = Counter()
    for text in corpus:
        for word in split_words(text):
            chars = [alphabet[b] for b in word.encode("utf-8")]
            words[tuple(chars[:-1] + [chars[-1] + END_OF_WORD])] += 1
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        words = Counter({_merge(word, best): n for word, n in words.items()})
    return merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    base = list(byte_alphabet().values())
    tokens = base + [c + END_OF_WORD for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def save_tokenizer(folder: Path, corpus: Iterable[str], num_merges: int, max_length: int) -> dict[str, int]:
    """Write vocab.json, merges.txt and the config files CLIPTokenizer reads; return the vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(corpus, num_merges)
    vocab = build_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
              "add_prefix_space": False, "errors": "replace", **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return vocab
