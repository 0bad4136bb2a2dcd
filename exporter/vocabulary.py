"""The `vocabulary` an export declares: the words the run's training captions used.

Shapes runs: every word `core.shapes.caption` can produce (and `core.shape_pairs.pair_caption`
when the run mixed in two-object examples), derived from their word lists and grammar;
tests/exporter/test_vocabulary.py checks a large sample of captions stays inside it.
`folder:PATH` runs: the words of the folder's captions (`.txt` files and class folder names;
no image is opened), most frequent first, when the folder is still there and the words fit
the bundle's bounds. Anything else (an unknown dataset, a folder that moved): no vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from diffusion_studio.core.bundle import MAX_VOCABULARY, MAX_WORD_LENGTH
from diffusion_studio.core.vocabulary import words
from diffusion_studio.errors import UsageError

# The words core.shapes.caption writes around the named facts: articles, "in/at the …",
# "on a … background", "a … background with …", and _in_position's "corner" / "middle" / "center".
SHAPES_GRAMMAR_WORDS: tuple[str, ...] = ("a", "an", "the", "in", "at", "on", "with", "background",
                                         "corner", "middle", "center")
# core.shape_pairs.pair_caption: "a … in the … and/next to/with/beside a …", "on a … background".
PAIRS_GRAMMAR_WORDS: tuple[str, ...] = ("a", "an", "the", "in", "on", "with", "background")


def _split(phrases: Iterable[str]) -> list[str]:
    return [w for phrase in phrases for w in phrase.split()]


def shapes_vocabulary(pairs: bool = False) -> list[str]:
    """Every word a Shapes caption can hold: colours, shapes, sizes, positions, backgrounds, grammar.

    `pairs` adds the two-object captions' words (connectives such as "next", "beside").
    """
    from diffusion_studio.core.shape_pairs import CONNECTIVES, CORNERS
    from diffusion_studio.core.shapes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES

    found = [*COLORS, *SHAPES, *SIZES, *_split(POSITIONS), *BACKGROUNDS, *SHAPES_GRAMMAR_WORDS]
    if pairs:
        found += [*_split(CONNECTIVES), *_split(CORNERS), "small", *PAIRS_GRAMMAR_WORDS]
    return list(dict.fromkeys(found))


def caption_vocabulary(captions: Iterable[str]) -> list[str] | None:
    """The captions' words, most frequent first (ties alphabetical); None if they exceed the bounds."""
    counts = Counter(w for text in captions for w in words(text) if len(w) <= MAX_WORD_LENGTH)
    if not counts or len(counts) > MAX_VOCABULARY:
        return None
    return [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def folder_vocabulary(folder: str | Path) -> tuple[list[str] | None, str | None]:
    """(the folder dataset's caption words, None) or (None, a note saying why there are none)."""
    from diffusion_studio.training.datasets.folder import scan_folder

    try:
        scan = scan_folder(folder)
    except (UsageError, OSError) as exc:
        return None, f"no vocabulary declared: the dataset folder could not be read ({str(exc).rstrip('.')})"
    vocabulary = caption_vocabulary(item.caption for item in scan.items)
    if vocabulary is None:
        return None, (f"no vocabulary declared: the captions of {folder} hold no words or more than "
                      f"{MAX_VOCABULARY:,} different ones")
    return vocabulary, None


def run_vocabulary(config: Mapping[str, Any]) -> tuple[list[str] | None, str | None]:
    """The vocabulary of the run whose TrainConfig (as JSON) is `config`, and a note when there is none."""
    dataset = config.get("dataset")
    if dataset == "shapes":
        return shapes_vocabulary(pairs=float(config.get("two_shape_share") or 0.0) > 0.0), None
    if isinstance(dataset, str) and dataset.startswith("folder:"):
        return folder_vocabulary(dataset[len("folder:"):])
    return None, f"no vocabulary declared: the run config names no known dataset ({dataset!r})"
