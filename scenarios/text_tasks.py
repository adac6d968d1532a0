"""Instruction tasks for a continual stream of language-model tasks, generated offline.

Inspired by TRACE (Wang et al., *TRACE: A Comprehensive Benchmark for Continual
Learning in Large Language Models*, 2023, arXiv:2310.06762): a language model
is fine-tuned on a *sequence of distinct instruction tasks*, and after each one
it is scored on every task seen so far and on general text it was never tuned
on (its "general ability"). TRACE's tasks are downloaded data sets; the ones
here are small synthetic tasks made from the standard library and word lists
bundled in this module, so a stream needs no download and is the same on every
machine for a given seed.

Every task is a :class:`TextTask` in :data:`TASKS`. An example is a
``(prompt, response)`` pair whose prompt is the task's one-line instruction, a
newline, then the input. Responses are short (at most about
25 characters, a few BPE tokens), so exact match is learnable by a small
(~135M-parameter) model in tens of steps:

- ``arithmetic``: ``37 + 45`` -> ``82``
- ``reverse``: ``table`` -> ``elbat``
- ``uppercase``: ``green river stone`` -> ``GREEN RIVER STONE``
- ``caesar`` (shift 3): ``cat`` -> ``fdw``
- ``date_format``: ``2024-03-07`` -> ``07/03/2024``
- ``sentiment``: ``The movie was wonderful.`` -> ``positive``
- ``sort_letters``: ``table`` -> ``abelt``
- ``first_letters``: ``portable network graphics`` -> ``PNG``
- ``count_words``: ``the cat sat on the mat`` -> ``6``

:func:`generate` draws distinct train and test examples of one task,
deterministically from ``(task, seed)``; :func:`read_jsonl` reads a user task
from a local JSONL file; :func:`general_text` returns the fixed general-text
set (text that ships with Python itself, see :data:`GENERAL_TEXT_SOURCES`) on
which retention of general ability is measured.
"""

from __future__ import annotations

import ast
import codecs
import importlib.util
import json
import random
import sys
import sysconfig
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "GENERAL_TEXT_SOURCES",
    "NEGATIVE_WORDS",
    "POSITIVE_WORDS",
    "TASKS",
    "WORDS",
    "Example",
    "TextTask",
    "caesar_shift",
    "general_text",
    "generate",
    "read_jsonl",
]

Example = tuple[str, str]
"""One example: ``(prompt, response)``."""

# Common English words of 3-7 lowercase letters, no palindromes (so that
# ``reverse`` never returns its input).
WORDS: tuple[str, ...] = (
    "able", "acid", "actor", "adult", "agent", "angle", "animal", "apple", "army", "art",
    "autumn", "baby", "badge", "basket", "beach", "bean", "bear", "bell", "belt", "bird",
    "black", "blade", "blue", "board", "boat", "body", "bone", "book", "bottle", "brain",
    "bread", "brick", "bridge", "brush", "cable", "cake", "camera", "candle", "card", "carpet",
    "castle", "chair", "chalk", "cheese", "cherry", "circle", "city", "clock", "cloud", "coast",
    "coffee", "copper", "corner", "cotton", "cow", "crowd", "cup", "dance", "desk", "dinner",
    "doctor", "door", "dragon", "dream", "dress", "drink", "earth", "engine", "field", "finger",
    "fish", "flag", "flower", "forest", "fork", "fruit", "garden", "ghost", "glass", "glove",
    "gold", "grape", "grass", "green", "guitar", "hammer", "hand", "harbor", "heart", "honey",
    "horse", "house", "island", "jacket", "jungle", "kettle", "king", "kitchen", "knife", "ladder",
    "lamp", "lemon", "letter", "light", "lion", "market", "metal", "milk", "mirror", "money",
    "monkey", "moon", "mother", "mouse", "music", "needle", "night", "ocean", "onion", "orange",
    "paper", "pencil", "pepper", "piano", "pillow", "planet", "plate", "pocket", "potato", "queen",
    "rabbit", "river", "road", "robot", "rocket", "salt", "school", "shadow", "sheep", "shirt",
    "silver", "sister", "snake", "spoon", "square", "stone", "storm", "street", "sugar", "summer",
    "table", "teacher", "tiger", "tomato", "tower", "train", "tree", "turtle", "valley", "violin",
    "wagon", "water", "window", "winter", "wolf", "yellow", "zebra",
)  # fmt: skip

# Sentiment lexicon: adjectives whose polarity does not depend on context.
POSITIVE_WORDS: tuple[str, ...] = (
    "amazing", "beautiful", "brilliant", "charming", "cheerful", "delightful", "enjoyable",
    "excellent", "fantastic", "fabulous", "friendly", "generous", "gorgeous", "great",
    "happy", "joyful", "lovely", "magnificent", "marvelous", "outstanding", "perfect",
    "pleasant", "remarkable", "splendid", "superb", "terrific", "thrilling", "wonderful",
    "inspiring", "impressive", "refreshing", "elegant",
)  # fmt: skip
NEGATIVE_WORDS: tuple[str, ...] = (
    "awful", "boring", "broken", "clumsy", "dirty", "disappointing", "disgusting", "dreadful",
    "dull", "gloomy", "horrible", "miserable", "nasty", "painful", "pathetic", "poor",
    "rude", "sad", "terrible", "tiresome", "ugly", "unpleasant", "useless", "weak",
    "annoying", "frustrating", "mediocre", "noisy", "shabby", "stale", "tedious", "worthless",
)  # fmt: skip

# Sentence templates for ``sentiment``; ``{thing}`` is a neutral noun, ``{word}``
# the one word that carries the sentiment.
_SENTIMENT_TEMPLATES: tuple[str, ...] = (
    "The {thing} was {word}.",
    "I found the {thing} {word}.",
    "What a {word} {thing}!",
    "Honestly, the {thing} felt {word}.",
    "Everyone said the {thing} was {word}.",
    "It was a {word} {thing}.",
    "The {thing} seemed {word} to me.",
    "My friends thought the {thing} was {word}.",
)
_SENTIMENT_THINGS: tuple[str, ...] = (
    "movie", "meal", "hotel", "concert", "book", "trip", "game", "show", "service", "class",
    "party", "album", "museum", "lecture", "phone", "car", "park", "dinner",
)  # fmt: skip

# Words for the phrases of ``first_letters``.
_ACRONYM_WORDS: tuple[str, ...] = (
    "portable", "network", "graphics", "central", "processing", "unit", "random", "access",
    "memory", "global", "position", "system", "open", "source", "data", "base", "machine",
    "learning", "light", "emitting", "diode", "natural", "language", "model", "public",
    "private", "key", "quick", "response", "code", "remote", "control", "frequently", "asked",
    "question", "world", "wide", "web", "virtual", "reality", "user", "interface", "file",
    "transfer", "protocol", "power", "supply", "input", "output", "device", "error", "message",
)  # fmt: skip

_COUNT_WORDS: tuple[str, ...] = (
    "the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "big", "small", "old", "new",
    "red", "blue", "quickly", "slowly", "jumped", "over", "fence", "bird", "sang", "loudly",
    "child", "ate", "an", "apple", "in", "park", "today",
)  # fmt: skip

_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class TextTask:
    """One instruction task of the text stream.

    Attributes:
        name: the task's ID, its key in :data:`TASKS`.
        instruction: a one-line English instruction that starts every prompt
            of the task; distinct per task.
        description: one line for the docs.
        make: draws one ``(input, response)`` pair from a :class:`random.Random`;
            the same input always gets the same response.
    """

    name: str
    instruction: str
    description: str
    make: Callable[[random.Random], tuple[str, str]]

    def prompt(self, text: str) -> str:
        """The prompt for input ``text``: the instruction, a newline, then the input."""
        return f"{self.instruction}\n{text}"


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"{a} + {b}", str(a + b)


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return word, word[::-1]


def _uppercase(rng: random.Random) -> tuple[str, str]:
    phrase = " ".join(rng.sample(WORDS, rng.randint(2, 3)))
    return phrase, phrase.upper()


def caesar_shift(text: str, shift: int = 3) -> str:
    """Shift each lowercase letter of ``text`` by ``shift`` places, wrapping z to a."""
    return "".join(
        chr((ord(c) - ord("a") + shift) % 26 + ord("a")) if "a" <= c <= "z" else c for c in text
    )


def _caesar(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return word, caesar_shift(word, 3)


def _date_format(rng: random.Random) -> tuple[str, str]:
    year, month = rng.randint(1950, 2049), rng.randint(1, 12)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    day = rng.randint(1, _DAYS_IN_MONTH[month - 1] + (month == 2 and leap))
    return f"{year:04d}-{month:02d}-{day:02d}", f"{day:02d}/{month:02d}/{year:04d}"


def _sentiment(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(("positive", "negative"))
    word = rng.choice(POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS)
    template = rng.choice(_SENTIMENT_TEMPLATES)
    sentence = template.format(thing=rng.choice(_SENTIMENT_THINGS), word=word)
    return sentence[0].upper() + sentence[1:], label


def _sort_letters(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return word, "".join(sorted(word))


def _first_letters(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_ACRONYM_WORDS, rng.randint(3, 4))
    return " ".join(words), "".join(w[0] for w in words).upper()


def _count_words(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(_COUNT_WORDS) for _ in range(rng.randint(3, 9))]
    return " ".join(words), str(len(words))


TASKS: dict[str, TextTask] = {
    task.name: task
    for task in (
        TextTask(
            "arithmetic",
            "Add the two numbers and give the sum.",
            "the sum of two integers from 10 to 99 (`37 + 45` -> `82`)",
            _arithmetic,
        ),
        TextTask(
            "reverse",
            "Write the word backwards.",
            "a common English word spelled backwards (`table` -> `elbat`)",
            _reverse,
        ),
        TextTask(
            "uppercase",
            "Rewrite the phrase in upper case.",
            "a two- or three-word phrase in upper case (`red cup` -> `RED CUP`)",
            _uppercase,
        ),
        TextTask(
            "caesar",
            "Encode the word with a Caesar cipher, shifting each letter by three.",
            "Caesar cipher with shift 3, z wrapping to c (`cat` -> `fdw`)",
            _caesar,
        ),
        TextTask(
            "date_format",
            "Convert the ISO date to day/month/year.",
            "an ISO date as DD/MM/YYYY (`2024-03-07` -> `07/03/2024`)",
            _date_format,
        ),
        TextTask(
            "sentiment",
            "Is the sentiment of the sentence positive or negative?",
            "the polarity of a templated sentence with one lexicon word -> `positive`/`negative`",
            _sentiment,
        ),
        TextTask(
            "sort_letters",
            "Sort the letters of the word alphabetically.",
            "the letters of a word in alphabetical order (`table` -> `abelt`)",
            _sort_letters,
        ),
        TextTask(
            "first_letters",
            "Give the acronym formed by the first letters of the words.",
            "the upper-case acronym of a 3-4 word phrase (`portable network graphics` -> `PNG`)",
            _first_letters,
        ),
        TextTask(
            "count_words",
            "Count the words in the text.",
            "the number of words, 3 to 9, in a string of words (`the cat sat` -> `3`)",
            _count_words,
        ),
    )
}
"""The built-in instruction tasks, by name."""


def _rng(task: str, seed: int) -> random.Random:
    # crc32 is stable across processes (Python's hash() of a str is salted).
    return random.Random((zlib.crc32(task.encode("utf-8")) << 64) | (seed & (2**64 - 1)))


def generate(
    task: str, n_train: int, n_test: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """Draw ``n_train`` train and ``n_test`` test examples of a built-in task.

    All ``n_train + n_test`` prompts are distinct, so train and test share no
    prompt. The result depends only on ``(task, seed)`` (and the two counts),
    the same in every process.

    Args:
        task: a name in :data:`TASKS`.
        n_train: number of training examples, ``>= 0``.
        n_test: number of test examples, ``>= 0``.
        seed: the random seed.

    Returns:
        ``(train, test)``, lists of ``(prompt, response)``.

    Raises:
        ValueError: unknown ``task`` (the message lists the known ones), a
            negative count, or a task whose input space is too small for
            ``n_train + n_test`` distinct prompts (the message says how many it
            could make).
    """
    if task not in TASKS:
        raise ValueError(f"unknown text task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    spec = TASKS[task]
    rng = _rng(task, seed)
    wanted = n_train + n_test
    max_draws = 1000 + 50 * wanted
    examples: dict[str, str] = {}
    draws = 0
    while len(examples) < wanted and draws < max_draws:
        text, response = spec.make(rng)
        examples.setdefault(spec.prompt(text), response)
        draws += 1
    if len(examples) < wanted:
        raise ValueError(
            f"text task {task!r} could make only {len(examples)} distinct examples in "
            f"{draws} draws, fewer than n_train + n_test = {wanted}"
        )
    pairs = list(examples.items())
    return pairs[:n_train], pairs[n_train:]


def read_jsonl(
    path: str | Path, *, prompt_field: str = "prompt", response_field: str = "response"
) -> list[Example]:
    """Read a user task from a local JSONL file.

    Each non-blank line is one JSON object holding a non-empty string under
    ``prompt_field`` and one under ``response_field``; other keys are ignored.
    The prompt is used as is (no instruction is added).

    Args:
        path: the ``.jsonl`` file.
        prompt_field: key of the prompt in each object.
        response_field: key of the response in each object.

    Returns:
        The examples in file order.

    Raises:
        ValueError: ``f"{path}:{line}: ..."`` for a line that is not valid JSON,
            not an object, or lacks a field, or whose field is not a string or is
            empty (the message names the field); ``f"{path}: ..."`` for a file
            with no examples.
        OSError: the file cannot be read.
    """
    examples: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            values = []
            for field in (prompt_field, response_field):
                if field not in record:
                    raise ValueError(f"{where}: missing field {field!r}")
                value = record[field]
                if not isinstance(value, str):
                    raise ValueError(
                        f"{where}: field {field!r} must be a string, got {type(value).__name__}"
                    )
                if not value.strip():
                    raise ValueError(f"{where}: field {field!r} is empty")
                values.append(value)
            examples.append((values[0], values[1]))
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return examples


GENERAL_TEXT_SOURCES: tuple[str, ...] = (
    "The Zen of Python (PEP 20, the standard-library module `this`), in passages of 5 lines",
    "Section 'A. HISTORY OF THE SOFTWARE' of Python's LICENSE.txt, one string per paragraph",
)
"""Where :func:`general_text` comes from, in words for the docs."""

_ZEN_LINES_PER_PASSAGE = 5


def _zen_passages() -> list[str]:
    spec = importlib.util.find_spec("this")
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return []
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "s" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            lines = [ln.strip() for ln in codecs.decode(node.value.value, "rot13").splitlines()]
            lines = [ln for ln in lines if ln]
            n = _ZEN_LINES_PER_PASSAGE
            return ["\n".join(lines[i : i + n]) for i in range(0, len(lines), n)]
    return []


def _license_path() -> Path | None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for directory in (Path(sys.base_prefix) / "lib" / version, Path(sysconfig.get_path("stdlib"))):
        candidate = directory / "LICENSE.txt"
        if candidate.is_file():
            return candidate
    return None


def _history_paragraphs() -> list[str]:
    path = _license_path()
    if path is None:
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    start = text.find("A. HISTORY OF THE SOFTWARE")
    if start < 0:
        return []
    end = text.find("B. TERMS AND CONDITIONS", start)
    section = text[start : end if end >= 0 else len(text)]
    paragraphs = []
    for block in section.split("\n\n"):
        lines = block.strip("\n").splitlines()
        # Skip the heading and its underline, the release table (indented) and
        # labels such as "Footnotes:".
        if not lines or lines[0].startswith((" ", "\t", "A. HISTORY")):
            continue
        if len(lines) == 1 and lines[0].rstrip().endswith(":"):
            continue
        paragraphs.append(" ".join(block.split()))
    return paragraphs


def general_text() -> list[str]:
    """The fixed general-text set on which retention of general ability is measured.

    Text that ships with Python itself, so nothing is downloaded (see
    :data:`GENERAL_TEXT_SOURCES`): the Zen of Python, decoded from the source
    of the module ``this`` without importing it (importing prints it), in
    passages of five lines; then the prose paragraphs of section "A. HISTORY OF
    THE SOFTWARE" of Python's ``LICENSE.txt``, each whitespace-normalised into
    one string. The same list on every call for a given Python installation.

    Returns:
        The passages, Zen first.

    Raises:
        FileNotFoundError: either source is missing from this Python installation
            (a set made of one of them would give retention numbers that cannot be
            compared with those of the whole set).
    """
    zen, history = _zen_passages(), _history_paragraphs()
    missing = [
        what
        for what, found in (
            ("the source of the stdlib module 'this'", zen),
            ("the 'A. HISTORY OF THE SOFTWARE' section of LICENSE.txt", history),
        )
        if not found
    ]
    if missing:
        raise FileNotFoundError(
            f"general_text: found not {' nor '.join(missing)} under {sys.base_prefix!r} "
            f"or {sysconfig.get_path('stdlib')!r}"
        )
    return zen + history
