"""Every code block in the README and docs/*.md runs (python) or parses (yaml) as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "CONTRIBUTING.md",
]
_FENCE = re.compile(r"```(\w+)\n(.*?)```", flags=re.DOTALL)
BLOCKS = _FENCE.findall(README.read_text())
# (document, index in that document, language, code) for every fenced block with a language.
ALL_BLOCKS = [
    (document.relative_to(ROOT).as_posix(), index, language, code)
    for document in DOCUMENTS
    if document.exists()
    for index, (language, code) in enumerate(_FENCE.findall(document.read_text()))
]


def _blocks(language: str) -> list[Any]:
    return [
        pytest.param(f"{document} {language} block {index}", code, id=f"{document}-{index}")
        for document, index, block_language, code in ALL_BLOCKS
        if block_language == language
    ]


def test_the_readme_has_code_blocks() -> None:
    assert sum(language == "python" for language, _ in BLOCKS) >= 3


@pytest.mark.parametrize(("where", "code"), _blocks("python"))
def test_python_block_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {})


@pytest.mark.parametrize(("where", "code"), _blocks("yaml"))
def test_yaml_block_parses(where: str, code: str) -> None:
    document = yaml.safe_load(code)
    assert isinstance(document, dict)
    if "rules" in document:
        from lightning_init import InitPolicy

        assert InitPolicy.from_dict(document).rules
