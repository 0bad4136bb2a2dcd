"""A CLIP text tokenizer as a Hugging Face `tokenizers.Tokenizer`, built from vocab.json and merges.txt.

CLIP (Radford et al. 2021) tokenizes a prompt as byte-level BPE over lowercased words:

1. normalise: Unicode NFC, every run of whitespace -> one space, lowercase;
2. split into words: the two special tokens, the contractions 's 't 're 've 'm 'll 'd, runs of
   letters, single digits, and runs of other non-space characters (spaces are dropped);
3. map each word's UTF-8 bytes to printable characters (the byte-level alphabet) and apply the
   BPE merges, the last symbol of a word carrying the suffix "</w>";
4. frame with <|startoftext|> … <|endoftext|>, truncate to max_length (the two specials kept)
   and pad to max_length with the pad token, as Stable Diffusion's pipelines call the tokenizer
   (padding="max_length", truncation=True).

The result is saved as the bundle's tokenizer.json and loaded by the app with
`tokenizers.Tokenizer.from_file`, which keeps its padding and truncation settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from diffusion_studio.core.files import read_json_file
from diffusion_studio.errors import BundleError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
DEFAULT_MAX_LENGTH = 77
# Step 2 above: the pieces kept as words (everything else, i.e. whitespace, is dropped).
WORDS = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def read_merges(path: Path) -> list[tuple[str, str]]:
    """The merge rules of a CLIP merges.txt: one "a b" pair a line after the "#version" header."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} cannot be read as a merges file ({type(exc).__name__}).") from exc
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BundleError(f"{path} line {number} must hold two symbols separated by a space, got {line[:60]!r}.")
        merges.append((parts[0], parts[1]))
    return merges


def read_vocab(path: Path) -> dict[str, int]:
    """token -> id of a CLIP vocab.json; BundleError names what is wrong."""
    data = read_json_file(Path(path), "The tokenizer vocabulary", error=BundleError)
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in data.items()):
        raise BundleError(f"{path} must map tokens to non-negative integer ids.")
    return data


def build_clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int = DEFAULT_MAX_LENGTH,
                         pad_token: str = EOS) -> Tokenizer:
    """The tokenizer of the module docstring; BundleError when a special token or a merge result is missing."""
    for token in (BOS, EOS, pad_token):
        if token not in vocab:
            raise BundleError(f"The CLIP vocabulary has no {token!r} token.")
    for a, b in merges:
        if a + b not in vocab:
            raise BundleError(f"The CLIP merge {a!r} + {b!r} makes {a + b!r}, which the vocabulary lacks.")
    model = BPE(vocab=vocab, merges=merges, unk_token=EOS, end_of_word_suffix=END_OF_WORD,
                continuing_subword_prefix="", fuse_unk=False)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),  # keep the matches, drop the rest
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # The specials typed in a prompt are the special tokens themselves, as in transformers' CLIPTokenizer
    # (which also treats the pad token so: with SD 2's pad "!", "!!" is two pad ids, not a merged "!!</w>").
    specials = dict.fromkeys((BOS, EOS, pad_token))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos_id, eos_id = vocab[BOS], vocab[EOS]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, bos_id), (EOS, eos_id)])
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=vocab[pad_token], pad_token=pad_token)
    return tok


def clip_tokenizer_from_folder(folder: Path, max_length: int | None = None, pad_token: str | None = None) -> Tokenizer:
    """The tokenizer of a diffusers/transformers tokenizer/ folder (vocab.json, merges.txt, tokenizer_config.json).

    max_length and pad_token default to tokenizer_config.json's model_max_length and pad_token
    (then special_tokens_map.json's), else 77 and <|endoftext|>.
    """
    folder = Path(folder)
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise BundleError(f"{folder} has no {name}, so its CLIP tokenizer cannot be built.")
    config: dict[str, object] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the later one wins
        if (folder / name).is_file():
            data = read_json_file(folder / name, "The tokenizer config", error=BundleError)
            if isinstance(data, dict):
                config.update(data)
    if max_length is None:
        value = config.get("model_max_length", DEFAULT_MAX_LENGTH)
        max_length = value if isinstance(value, int) and 2 <= value <= 512 else DEFAULT_MAX_LENGTH
    if pad_token is None:
        value = config.get("pad_token", EOS)
        if isinstance(value, dict):  # an AddedToken written out: {"content": "!", ...}
            value = value.get("content", EOS)
        pad_token = value if isinstance(value, str) else EOS
    return build_clip_tokenizer(read_vocab(folder / "vocab.json"), read_merges(folder / "merges.txt"),
                                max_length, pad_token)


def padding_of(tok: Tokenizer) -> tuple[int, int]:
    """(max_length, pad id) a tokenizer built here pads to."""
    padding = tok.padding
    if not padding or padding.get("length") is None:
        raise BundleError("The tokenizer does not pad to a fixed length.")
    return int(padding["length"]), int(padding["pad_id"])


def encode(tok: Tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, framed, truncated and padded (module docstring)."""
    return [list(e.ids) for e in tok.encode_batch(prompts)]


def save(tok: Tokenizer, path: Path) -> None:
    """Write the tokenizer as a `tokenizers` JSON file, atomically."""
    from diffusion_studio.core.files import atomic_write_text

    atomic_write_text(Path(path), json.dumps(json.loads(tok.to_str()), ensure_ascii=False, indent=1) + "\n")
