"""``python -m search.run --help``: effective values, one meaning per key, plain text; unknown keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search.config import ConfigError, list_spaces, load_config
from search.help import UNDOCUMENTED, doc_table, usage, yaml_comments
from search.run import main

_KEY_LINE = re.compile(r"^  ([\w.]+) = (.*)$")


def _keys(text: str) -> dict[str, tuple[str, str]]:
    """``{key: (value, meaning)}`` of the key listing; a long ``key = value`` has its meaning below."""
    lines = text.split("Keys and the values this run would use", 1)[1].splitlines()[1:]
    out = {}
    for i, line in enumerate(lines):
        match = _KEY_LINE.match(line)
        if not match:
            continue
        rest = match[2]
        value, _, meaning = rest.partition("  ")
        if not meaning.strip():  # wrapped: the meaning is the next line
            meaning = lines[i + 1]
        out[match[1]] = (value.strip(), meaning.strip())
    return out


def test_help_shows_what_a_bare_run_of_the_space_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    keys = _keys(capsys.readouterr().out)
    # quick.yaml over defaults.yaml and the trainable's defaults (epochs 10, 128 px, no stages)
    assert keys["trainable.epochs"][0] == "3" and keys["trainable.image_size"][0] == "96"
    assert keys["stages"][0] == "[oof, ensemble]" and keys["oof.top_k"][0] == "2"
    assert keys["space"][0] == "quick" and keys["experiment"][0] == "null"
    assert keys["trainable.lr"][0] == "searched: loguniform(0.0003, 0.003)"
    assert keys["trainable.epochs"][1] == "training epochs"
    assert keys["tune.search_alg"][1].startswith("auto (grid if every key is a grid")


def test_help_follows_the_space_and_the_overrides_given_with_it() -> None:
    keys = _keys(usage(["space=lr", "trainable.epochs=7", "--help"]))
    assert keys["trainable.epochs"][0] == "7" and keys["tune.num_samples"][0] == "16"
    assert keys["stages"][0] == "[]" and keys["trainable.image_size"][0] == "128"
    assert keys["trainable.schedule"][0] == "searched: choice('cosine', 'step')"
    bad = usage(["tune.metrik=loss"])
    assert bad.splitlines()[0].startswith("usage:") and "error in the arguments" in bad
    assert "did you mean tune.metric?" in bad and _keys(bad)["trainable.epochs"][0] == "3"


@pytest.mark.parametrize("space", list_spaces())
def test_every_key_of_every_space_has_a_meaning_and_no_markup(space: str) -> None:
    text = usage([f"space={space}"])
    keys = _keys(text)
    assert len(keys) > 60 and "trainable.data" not in keys and "description" not in keys
    missing = [k for k, (_, meaning) in keys.items() if not meaning or meaning == UNDOCUMENTED]
    assert not missing, (
        f"add a `# comment` in search/defaults.yaml or a row in the trainable's table: {missing}"
    )
    assert "::" not in text and "`" not in text and ":mod:" not in text


def test_yaml_comments_follow_the_nesting(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        "# header comment\ntop: 1   # the top\nsec:   # a section\n  a: x  # inner a\n"
        "  b: 2\n  deep:\n    c: [1, 2]    # ``c`` deep\nafter: 3 # after the section\n"
    )
    assert yaml_comments(path) == {
        "top": "the top",
        "sec": "a section",
        "sec.a": "inner a",
        "sec.deep.c": "c deep",
        "after": "after the section",
    }


def test_doc_table_reads_rows_and_continuations() -> None:
    doc = """Intro.

    ====== ======= =========================
    key    default meaning
    ====== ======= =========================
    lr     ``3``   peak rate, see :mod:`x`
    aug.a  ``0``   first line
                   second line
    ====== ======= =========================
    """
    assert doc_table(doc) == {"lr": "peak rate, see x", "aug.a": "first line second line"}


@pytest.mark.parametrize(
    ("key", "nearest", "section", "listed"),
    [
        ("tune.metrik", "tune.metric", "keys of tune:", "num_samples"),
        ("trainable.aug.cutmx", "trainable.aug.cutmix", "keys of trainable.aug:", "mixup"),
        ("tuen.mode", "tune.mode", "top-level keys:", "scheduler"),
    ],
)
def test_unknown_key_names_the_nearest_then_its_section(
    key: str, nearest: str, section: str, listed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([f"{key}=1"])
    message = str(info.value)
    first, second, *_ = message.splitlines()
    assert first.startswith(f"command line: unknown key {key!r}; did you mean {nearest}")
    assert second.strip().startswith(section) and listed in second
    assert len(message) < 500 and "oof.top_k" not in message  # not every key of the config
