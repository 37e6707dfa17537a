"""Every code block in the README runs (python) or parses (yaml) as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_has_code_blocks() -> None:
    assert sum(language == "python" for language, _ in BLOCKS) >= 3


@pytest.mark.parametrize(
    "index", [i for i, (language, _) in enumerate(BLOCKS) if language == "python"]
)
def test_python_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index][1], f"README.md python block {index}", "exec"), {})


@pytest.mark.parametrize(
    "index", [i for i, (language, _) in enumerate(BLOCKS) if language == "yaml"]
)
def test_yaml_block_parses(index: int) -> None:
    document = yaml.safe_load(BLOCKS[index][1])
    assert isinstance(document, dict)
    if "rules" in document:
        from lightning_init import InitPolicy

        assert InitPolicy.from_dict(document).rules
