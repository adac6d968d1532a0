"""Offline instruction tasks of the text stream, the JSONL reader and the general-text set."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest

from lifelong.scenarios import text_tasks
from lifelong.scenarios.text_tasks import (
    GENERAL_TEXT_SOURCES,
    NEGATIVE_WORDS,
    POSITIVE_WORDS,
    TASKS,
    WORDS,
    caesar_shift,
    general_text,
    generate,
    read_jsonl,
)

REQUIRED = {
    "arithmetic",
    "reverse",
    "uppercase",
    "caesar",
    "date_format",
    "sentiment",
    "sort_letters",
}


def _input(task: str, prompt: str) -> str:
    instruction, sep, text = prompt.partition("\n")
    assert sep and instruction == TASKS[task].instruction
    return text


# --- registry ---------------------------------------------------------------


def test_registry_has_the_tasks_with_distinct_one_line_instructions() -> None:
    assert REQUIRED <= set(TASKS)
    assert {"count_words", "first_letters"} & set(TASKS)
    assert len(TASKS) >= 8
    instructions = [t.instruction for t in TASKS.values()]
    assert len(set(instructions)) == len(instructions)
    for name, task in TASKS.items():
        assert task.name == name
        assert task.instruction and "\n" not in task.instruction
        assert task.description and "\n" not in task.description


def test_bundled_word_lists() -> None:
    assert len(set(WORDS)) == len(WORDS) >= 150
    for w in WORDS:
        assert re.fullmatch(r"[a-z]{3,7}", w), w
    assert len(set(POSITIVE_WORDS)) >= 30 and len(set(NEGATIVE_WORDS)) >= 30
    assert not set(POSITIVE_WORDS) & set(NEGATIVE_WORDS)


def test_task_is_frozen() -> None:
    with pytest.raises(AttributeError):
        TASKS["reverse"].instruction = "x"  # type: ignore[misc]


# --- generate ---------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
def test_generate_is_deterministic_and_disjoint(task: str) -> None:
    train, test = generate(task, 40, 20, seed=0)
    assert (train, test) == generate(task, 40, 20, seed=0)
    assert len(train) == 40 and len(test) == 20
    prompts = [p for p, _ in train + test]
    assert len(set(prompts)) == 60
    assert not {p for p, _ in train} & {p for p, _ in test}
    assert generate(task, 40, 20, seed=1) != (train, test)
    for prompt, response in train + test:
        assert prompt.startswith(TASKS[task].instruction + "\n")
        assert isinstance(response, str) and 1 <= len(response) <= 25


def test_generate_depends_on_task_and_seed_not_hash() -> None:
    # Same seed, different tasks with the same input space: different inputs.
    rev, _ = generate("reverse", 20, 0, seed=3)
    srt, _ = generate("sort_letters", 20, 0, seed=3)
    assert [_input("reverse", p) for p, _ in rev] != [_input("sort_letters", p) for p, _ in srt]
    # Pinned values: the stream must not change between processes (no salted hash()).
    assert [_input("reverse", p) for p, _ in rev[:3]] == ["bread", "cheese", "earth"]
    assert [_input("arithmetic", p) for p, _ in generate("arithmetic", 2, 0, seed=0)[0]] == [
        "98 + 47",
        "33 + 47",
    ]


def test_generate_zero_counts() -> None:
    assert generate("arithmetic", 0, 0, seed=0) == ([], [])
    train, test = generate("arithmetic", 0, 5, seed=0)
    assert train == [] and len(test) == 5


def test_arithmetic_responses() -> None:
    train, test = generate("arithmetic", 200, 50, seed=0)
    for prompt, response in train + test:
        m = re.fullmatch(r"(\d+) \+ (\d+)", _input("arithmetic", prompt))
        assert m
        a, b = int(m[1]), int(m[2])
        assert 10 <= a <= 99 and 10 <= b <= 99
        assert response == str(a + b)


def test_reverse_responses() -> None:
    train, test = generate("reverse", 100, 50, seed=0)
    for prompt, response in train + test:
        word = _input("reverse", prompt)
        assert word in WORDS
        assert response == word[::-1] and response != word


def test_uppercase_responses() -> None:
    train, test = generate("uppercase", 100, 20, seed=0)
    for prompt, response in train + test:
        phrase = _input("uppercase", prompt)
        assert 2 <= len(phrase.split()) <= 3 and phrase == phrase.lower()
        assert response == phrase.upper()


def test_caesar_responses() -> None:
    assert caesar_shift("cat") == "fdw"
    assert caesar_shift("xyz") == "abc"
    train, test = generate("caesar", 100, 50, seed=0)
    for prompt, response in train + test:
        word = _input("caesar", prompt)
        decoded = "".join(chr((ord(c) - ord("a") - 3) % 26 + ord("a")) for c in response)
        assert decoded == word and response != word


def test_date_format_responses() -> None:
    train, test = generate("date_format", 300, 100, seed=0)
    for prompt, response in train + test:
        date = datetime.date.fromisoformat(_input("date_format", prompt))
        assert response == date.strftime("%d/%m/%Y")


def test_sentiment_responses() -> None:
    train, test = generate("sentiment", 200, 50, seed=0)
    labels = set()
    for prompt, response in train + test:
        words = set(re.findall(r"[a-z]+", _input("sentiment", prompt).lower()))
        pos, neg = words & set(POSITIVE_WORDS), words & set(NEGATIVE_WORDS)
        assert len(pos) + len(neg) == 1
        assert response == ("positive" if pos else "negative")
        labels.add(response)
    assert labels == {"positive", "negative"}


def test_sort_letters_responses() -> None:
    train, test = generate("sort_letters", 100, 50, seed=0)
    for prompt, response in train + test:
        word = _input("sort_letters", prompt)
        assert response == "".join(sorted(word))


def test_optional_task_responses() -> None:
    if "first_letters" in TASKS:
        for prompt, response in generate("first_letters", 100, 0, seed=0)[0]:
            words = _input("first_letters", prompt).split()
            assert 3 <= len(words) <= 4
            assert response == "".join(w[0] for w in words).upper()
    if "count_words" in TASKS:
        for prompt, response in generate("count_words", 100, 0, seed=0)[0]:
            assert response == str(len(_input("count_words", prompt).split()))


def test_generate_space_too_small() -> None:
    n = len(set(WORDS))
    train, test = generate("reverse", n - 10, 10, seed=0)
    assert len({p for p, _ in train + test}) == n
    with pytest.raises(ValueError, match=rf"'reverse'.*only {n} distinct"):
        generate("reverse", n, 1, seed=0)


def test_generate_unknown_task_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown text task 'nope'") as info:
        generate("nope", 1, 1, seed=0)
    for name in TASKS:
        assert name in str(info.value)


def test_generate_negative_count() -> None:
    with pytest.raises(ValueError, match="n_train"):
        generate("arithmetic", -1, 1, seed=0)


# --- read_jsonl -------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_jsonl_good_file(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Say hi\nBob", "response": "hi Bob", "extra": 1},
        {"prompt": "a", "response": "b"},
    ]
    path = _write(tmp_path, json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n")
    assert read_jsonl(path) == [("Say hi\nBob", "hi Bob"), ("a", "b")]
    assert read_jsonl(str(path)) == read_jsonl(path)


def test_read_jsonl_custom_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"q": "2+2", "a": "4"}\n')
    assert read_jsonl(path, prompt_field="q", response_field="a") == [("2+2", "4")]
    with pytest.raises(ValueError, match=r":1: missing field 'prompt'"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "response": ', "invalid JSON"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ('{"response": "b"}', "missing field 'prompt'"),
        ('{"prompt": "a"}', "missing field 'response'"),
        ('{"prompt": 3, "response": "b"}', "field 'prompt' must be a string, got int"),
        ('{"prompt": "a", "response": null}', "field 'response' must be a string, got NoneType"),
        ('{"prompt": "", "response": "b"}', "field 'prompt' is empty"),
        ('{"prompt": "a", "response": "  "}', "field 'response' is empty"),
    ],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"prompt": "a", "response": "b"}'
    path = _write(tmp_path, f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(ValueError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_read_jsonl_empty_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="no examples") as info:
        read_jsonl(path)
    assert str(path) in str(info.value)


# --- general_text -----------------------------------------------------------


def test_general_text(capsys: pytest.CaptureFixture[str]) -> None:
    passages = general_text()
    assert capsys.readouterr().out == ""
    assert passages == general_text()
    assert len(passages) >= 8
    assert all(isinstance(p, str) and len(p) >= 80 for p in passages)
    joined = "\n".join(passages)
    assert "Beautiful is better than ugly" in joined
    assert "Guido van Rossum" in joined
    # Licence terms are left out, and paragraphs are whitespace-normalised.
    assert "TERMS AND CONDITIONS" not in joined and "LICENSE AGREEMENT" not in joined
    history = [p for p in passages if "Guido" in p]
    assert history and all("\n" not in p and "  " not in p for p in history)
    # The Zen comes in passages of several lines, not one line per string.
    zen = [p for p in passages if "\n" in p]
    assert len(zen) >= 3 and "Beautiful is better than ugly" in zen[0]
    assert all(4 <= len(p.splitlines()) <= 6 for p in zen)
    assert len(GENERAL_TEXT_SOURCES) == 2 and all(GENERAL_TEXT_SOURCES)


def test_general_text_missing_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_tasks, "_zen_passages", list)
    monkeypatch.setattr(text_tasks, "_history_paragraphs", list)
    with pytest.raises(FileNotFoundError, match="'this' nor the 'A. HISTORY"):
        general_text()


def test_general_text_needs_both_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_tasks, "_history_paragraphs", list)
    with pytest.raises(FileNotFoundError, match="found not the 'A. HISTORY"):
        general_text()
