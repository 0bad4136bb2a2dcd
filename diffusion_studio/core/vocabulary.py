"""What a model understands: its vocabulary, the prompt's unknown words, example prompts (pure Python).

A bundle may declare the words its training captions used (`model.json` field `vocabulary`).
Prompt words outside it (and outside `STOP_WORDS`) are words the model never saw: "a pink star"
on a Shapes model names neither a colour nor a shape it knows, and the image shows it.
The GUI's prompt hint and the CLI's `note:` line both come from `prompt_note`.

No numpy here: the GUI calls this on every keystroke and argparse front ends may import it.
The Shapes word lists below mirror `core.shapes` / `core.shape_pairs` (a test keeps them equal).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "STOP_WORDS",
    "example_prompts",
    "is_shapes_vocabulary",
    "prompt_note",
    "unknown_words",
    "words",
]

# Words any prompt may use without counting as unknown: articles, prepositions, conjunctions.
STOP_WORDS: frozenset[str] = frozenset({
    "a", "an", "the", "and", "or", "of", "on", "in", "at", "with", "to", "for", "from", "by",
    "into", "onto", "over", "under", "near", "its", "is", "are", "some", "this", "that",
})

# Lowercase word tokens: runs of letters and digits, an inner apostrophe keeps a word whole ("don't").
# A hyphen splits ("top-left" -> top, left), as the text encoder's tokenizer splits it.
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

# The Shapes grammar (mirrors core.shapes and core.shape_pairs; checked by tests/core/test_vocabulary.py).
_SHAPES_COLORS = ("red", "orange", "yellow", "green", "blue", "purple")
_SHAPES_SHAPES = ("circle", "square", "triangle")
_SHAPES_BACKGROUNDS = ("white", "black", "gray")
_SHAPES_POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")


def words(prompt: str) -> list[str]:
    """The prompt's lowercase word tokens, in order ("A Red-Circle, top-left" -> a, red, circle, top, left)."""
    return _WORD.findall(prompt.lower())


def unknown_words(prompt: str, vocabulary: Sequence[str] | None) -> list[str]:
    """Words of the prompt that are neither in the vocabulary nor stop words: in order, each once.

    [] when the vocabulary is None (the model declares none, so nothing can be said).
    """
    if vocabulary is None:
        return []
    known = {w.lower() for w in vocabulary}
    unknown: list[str] = []
    for word in words(prompt):
        if word not in known and word not in STOP_WORDS and word not in unknown:
            unknown.append(word)
    return unknown


def prompt_note(prompt: str, vocabulary: Sequence[str] | None, conditioning: str = "text") -> str | None:
    """One sentence for the user about this prompt on this model, or None when there is nothing to say.

    `conditioning` is "text" for a text-conditioned model; anything else (e.g. "none") means
    the model ignores the prompt.
    """
    if conditioning != "text":
        return "This model ignores the prompt (it is not text-conditioned)." if prompt.strip() else None
    if not words(prompt):
        return "An empty prompt makes an unconditional image (no guidance)."
    unknown = unknown_words(prompt, vocabulary)
    if not unknown:
        return None
    shown = unknown if len(unknown) <= 8 else [*unknown[:8], "…"]
    return f"This model does not know: {', '.join(shown)}."


def is_shapes_vocabulary(vocabulary: Sequence[str]) -> bool:
    """True when the vocabulary names at least one Shapes colour and one Shapes shape."""
    known = set(vocabulary)
    return any(c in known for c in _SHAPES_COLORS) and any(s in known for s in _SHAPES_SHAPES)


def _article(phrase: str) -> str:
    return "an" if phrase[:1] in "aeiou" else "a"


def example_prompts(vocabulary: Sequence[str], n: int = 5) -> list[str]:
    """Up to n prompts this model knows every word of (deterministic).

    A Shapes vocabulary gets prompts in the Shapes grammar ("a large red circle in the top left
    on a white background"); any other vocabulary gets a few of its words joined.
    """
    if n <= 0:
        return []
    vocab = [w for w in dict.fromkeys(w.lower() for w in vocabulary) if w]
    if is_shapes_vocabulary(vocab):
        return _shapes_examples(set(vocab), n)
    content = [w for w in vocab if w not in STOP_WORDS]
    if not content:
        return []
    per = 3
    prompts: list[str] = []
    for i in range(n):
        chunk = content[i * per:(i + 1) * per]
        if not chunk:
            break
        prompts.append(" ".join(chunk))
    return prompts


def _shapes_examples(known: set[str], n: int) -> list[str]:
    colors = [c for c in _SHAPES_COLORS if c in known]
    shapes = [s for s in _SHAPES_SHAPES if s in known]
    backgrounds = [b for b in _SHAPES_BACKGROUNDS if b in known] if "background" in known else []
    positions = [p for p in _SHAPES_POSITIONS if all(w in known for w in p.split())]
    sizes = [s for s in ("large", "small") if s in known]
    pairs = "next" in known and len(colors) * len(shapes) > 1
    prompts: list[str] = []
    for i in range(n):
        color = colors[i % len(colors)]
        shape = shapes[(i + i // len(colors)) % len(shapes)]
        if pairs and i % 5 == 4:
            other_color = colors[(i + 2) % len(colors)]
            other_shape = shapes[(i + 1) % len(shapes)]
            if (other_color, other_shape) == (color, shape):
                other_color = colors[(i + 3) % len(colors)]
            text = f"a {color} {shape} next to {_article(other_color)} {other_color} {other_shape}"
        else:
            noun = f"{sizes[i % len(sizes)]} {color} {shape}" if sizes and i % 2 == 1 else f"{color} {shape}"
            text = f"{_article(noun)} {noun}"
            if positions and i % 3 != 0:
                text += f" in the {positions[i % len(positions)]}"
        if backgrounds:
            bg = backgrounds[i % len(backgrounds)]
            text += f" on {_article(bg)} {bg} background"
        if text not in prompts:
            prompts.append(text)
    return prompts
