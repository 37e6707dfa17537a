"""Hostile and unusual YAML: refused with a PolicyError naming the file and line, or accepted."""

from __future__ import annotations

import codecs
import resource

import pytest
import torch

from lightning_init import InitPolicy, PolicyError
from lightning_init._yaml import line_of, load_yaml


def _laughs(levels: int, width: int = 9) -> str:
    """The classic 'billion laughs': each level repeats the previous one ``width`` times."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _merge_laughs(levels: int, width: int = 9) -> str:
    """The same blow-up through merge keys: each mapping merges the previous one 9 times."""
    keys = ", ".join(f"k{i}: 1" for i in range(width))
    lines = ["a0: &a0 {" + keys + "}"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} {{<<: [" + ", ".join([f"*a{level - 1}"] * width) + "]}")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_before_expanding(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(9) + "rules: []\n")  # 9**9 = 387 million strings once expanded
    assert path.stat().st_size < 500
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PolicyError, match=r"aliases expand .* past 100000 values") as info:
        InitPolicy.from_yaml(path)
    assert info.value.source == str(path) and info.value.line == 6  # 9**6 > 100000 there
    assert f"{path}, line 6" in str(info.value)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # expanding it took 3.7 GB


def test_merge_key_laughs_are_refused_too():
    with pytest.raises(PolicyError, match="past 100000 values") as info:
        load_yaml(_merge_laughs(9), source="m.yaml")
    assert info.value.line == 5  # 9 keys and 9 values, 9**4 times


def test_aliases_within_the_budget_are_expanded():
    doc = load_yaml(_laughs(5))  # 9**5 = 59049 values
    assert len(doc["a4"]) == 9 and doc["a4"][8][8][8][8] == ["lol"] * 9
    assert doc["a4"][0] is not doc["a4"][1]  # every alias is a fresh copy


@pytest.mark.parametrize(
    "text", ["r: &r [*r]\n", "r: &r\n  x: *r\n", "a: &a [1, [2, {b: *a}]]\n",
             "a: &a {<<: [*a]}\n"],
)
def test_recursive_alias_is_a_policy_error(text):
    with pytest.raises(PolicyError, match="recursive YAML alias") as info:
        load_yaml(text, source="rec.yaml")
    assert info.value.source == "rec.yaml" and info.value.line in (1, 2)


def test_recursive_alias_names_its_line():
    with pytest.raises(PolicyError, match="recursive YAML alias") as info:
        load_yaml("name: x\nr: &r\n  - 1\n  - *r\n", source="rec.yaml")
    assert info.value.line == 4


@pytest.mark.parametrize("depth", [65, 5000])
@pytest.mark.parametrize("kind", ["flow_list", "flow_map", "block_map"])
def test_deep_nesting_is_a_policy_error(depth, kind):
    if kind == "flow_list":
        text = "x: " + "[" * depth + "]" * depth + "\n"
    elif kind == "flow_map":
        text = "x: " + "{a: " * depth + "1" + "}" * depth + "\n"
    else:
        text = "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "1\n"
    with pytest.raises(PolicyError, match="nesting deeper than 64 levels") as info:
        load_yaml(text, source="deep.yaml")
    assert info.value.source == "deep.yaml" and info.value.line is not None


def test_nesting_through_aliases_is_bounded():
    text = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100))
    with pytest.raises(PolicyError, match=r"nesting deeper than 64 levels \(aliases expanded\)"):
        load_yaml(text, source="chain.yaml")
    assert load_yaml("x: " + "[" * 63 + "]" * 63)["x"] is not None


@pytest.mark.parametrize(
    ("data", "words", "line"),
    [("name: café\nrules: []\n".encode("latin-1"), ["not UTF-8", "0xe9", "Latin-1"], 1),
     ("name: x\n# été\n".encode("latin-1"), ["not UTF-8", "save it as UTF-8"], 2),
     ("name: x\nrules: []\n".encode("utf-16"), ["UTF-16", "byte-order mark", "UTF-8"], 1),
     ("name: x\n".encode("utf-32"), ["UTF-32", "UTF-8"], 1),
     ("name: x\nrules: []\n".encode("utf-16-le"), ["NUL byte", "UTF-16"], 1),
     (b"name: x\nrules: []\n\x00\x01", ["NUL byte", "UTF-8 text"], 3),
     (b"name: x\x07\n", ["control character U+0007", "UTF-8 text"], 1)],
)
def test_files_that_are_not_utf8_text_name_the_file(tmp_path, data, words, line):
    path = tmp_path / "enc.yaml"
    path.write_bytes(data)
    with pytest.raises(PolicyError) as info:
        InitPolicy.from_yaml(path)
    assert info.value.source == str(path) and info.value.line == line
    for word in words:
        assert word in str(info.value)


def test_utf8_with_and_without_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.yaml"
    rule = "rules: [{match: {type: Linear}, bias: zeros}]"
    path.write_bytes(codecs.BOM_UTF8 + f"name: café\n{rule}\n".encode())
    assert InitPolicy.from_yaml(path).name == "café"
    path.write_bytes(f"name: café\r\n{rule}\r\n".encode())
    assert InitPolicy.from_yaml(path).name == "café"
    assert load_yaml("name: café".encode()) == {"name": "café"}


def test_merge_key_with_override_is_accepted_and_the_override_wins():
    text = ("base: &base {init: normal, std: 0.1}\n"
            "flow: {<<: *base, std: 0.2}\n"
            "block:\n"
            "  std: 0.3\n"
            "  <<: *base\n")
    doc = load_yaml(text)
    assert doc["flow"] == {"init": "normal", "std": 0.2}
    assert doc["block"] == {"init": "normal", "std": 0.3}
    assert list(doc["flow"]) == ["init", "std"]  # PyYAML's order: merged keys first
    assert line_of(doc["flow"], "init") == 1 and line_of(doc["block"], "std") == 4
    assert doc["base"] == {"init": "normal", "std": 0.1}


def test_merge_of_several_mappings_earlier_wins():
    text = ("a: &a {x: 1, y: 1}\n"
            "b: &b {y: 2, z: 2}\n"
            "c: {<<: [*a, *b], z: 3}\n")
    assert load_yaml(text)["c"] == {"x": 1, "y": 1, "z": 3}


def test_merge_key_in_a_real_policy(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("rules:\n"
                    "  - match: {type: Conv2d}\n"
                    "    weight: &w {init: normal, std: 0.1}\n"
                    "  - match: {type: Linear}\n"
                    "    weight: {<<: *w, std: 0.2}\n"
                    "    bias: zeros\n")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Linear(400, 400))
    InitPolicy.from_yaml(path).apply(model)
    assert abs(model[1].weight.std().item() - 0.2) < 0.01  # 160000 draws: std error 0.0004


def test_real_duplicate_keys_stay_refused():
    with pytest.raises(PolicyError, match="duplicate key 'std'") as info:
        load_yaml("base: &b {init: normal}\nw: {<<: *b, std: 0.2, std: 0.3}\n", source="d.yaml")
    assert info.value.line == 2
    with pytest.raises(PolicyError, match="duplicate key 'a'"):
        load_yaml("a: 1\nb: 2\na: 3\n")
    with pytest.raises(PolicyError, match=r"duplicate merge key '<<' \(first at line 3\)"):
        load_yaml("b: &b {x: 1}\nw:\n  <<: *b\n  <<: *b\n")


@pytest.mark.parametrize("value", ["3", "[1, 2]", "[{a: 1}, 2]"])
def test_merge_of_a_non_mapping_is_refused(value):
    with pytest.raises(PolicyError, match="merge key '<<' takes a mapping"):
        load_yaml(f"w: {{<<: {value}}}\n", source="m.yaml")


def test_an_alias_item_reports_the_alias_line():
    doc = load_yaml("a: &a 1\nb:\n  - 2\n  - *a\n")
    assert doc["b"] == [2, 1] and line_of(doc["b"], 1) == 4
