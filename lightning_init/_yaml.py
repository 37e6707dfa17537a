"""Safe YAML loading that remembers the line of every mapping key and sequence item.

Only the YAML core types are constructed (``yaml.SafeLoader``): a ``!!python/...`` tag, or
any tag the safe loader does not know, is a :class:`~lightning_init.PolicyError` and is never
executed. Hostile documents are refused the same way, before anything is built: text that is
not UTF-8, nesting deeper than 64 levels, an alias that contains itself, and aliases that
expand the document past 100,000 values (the "billion laughs"). Merge keys (``<<: *base``)
are honoured, explicit keys winning over merged ones; a key written twice is refused.
"""

from __future__ import annotations

import codecs
from typing import Any

import yaml

from lightning_init.errors import PolicyError

__all__ = ["LinedDict", "LinedList", "line_of", "load_yaml"]

_TAG = "tag:yaml.org,2002:"
_MAP_TAG = _TAG + "map"
_SEQ_TAG = _TAG + "seq"
_MERGE_TAG = _TAG + "merge"
_VALUE_TAG = _TAG + "value"  # a plain '=' (YAML 1.1's value key), read as the string '='
_MAX_DEPTH = 64
_MAX_VALUES = 100_000
_UTF16_32_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


class LinedDict(dict):
    """A ``dict`` that knows its own 1-based line and the line of each key."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}


class LinedList(list):
    """A ``list`` that knows its own 1-based line and the line of each item."""

    line: int | None = None
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines = []


def line_of(container: Any, key: Any = None) -> int | None:
    """The line of ``container[key]`` (or of ``container`` itself), if it was loaded from YAML.

    Example:
        >>> doc = load_yaml("a: 1\\nb:\\n  - x\\n  - y\\n")
        >>> line_of(doc, "b"), line_of(doc["b"], 1)
        (2, 4)
    """
    if key is None:
        return getattr(container, "line", None)
    if isinstance(container, LinedDict):
        return container.key_lines.get(key, container.line)
    if isinstance(container, LinedList) and isinstance(key, int):
        if 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line
    return None


def load_yaml(text: str | bytes, *, source: str | None = None) -> Any:
    """Parse ``text`` (or a UTF-8 file's bytes) safely into lined dicts, lists and scalars.

    Raises:
        PolicyError: a syntax error (with its line), an unsafe or unknown tag, bytes that are
            not UTF-8, a character YAML forbids, nesting deeper than 64 levels, a recursive
            alias, or aliases that expand past 100,000 values.

    Example:
        >>> load_yaml("rules: []\\nseed: 3\\n")
        {'rules': [], 'seed': 3}
        >>> load_yaml("base: &b {init: normal, std: 0.1}\\nw: {<<: *b, std: 0.2}\\n")["w"]
        {'init': 'normal', 'std': 0.2}
        >>> load_yaml("x: !!python/object/apply:os.system ['echo hi']")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: line 1: YAML tag '!!python/object/apply:os.system' ...
        >>> laughs = "a0: &a0 [" + ", ".join(["lol"] * 10) + "]\\n" + "".join(
        ...     f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\\n" for i in range(1, 9))
        >>> load_yaml(laughs)  # 10**9 strings once expanded  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: line 5: YAML aliases expand this document past 100000 values...
    """
    if isinstance(text, bytes | bytearray):
        text = _decode(bytes(text), source)
    try:
        loader = _Loader(text, source)
    except yaml.reader.ReaderError as err:
        raise _reader_error(err, text, source) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = " ".join(p for p in (err.context, err.problem) if p)
            raise PolicyError(f"YAML syntax error: {problem}", source=source, line=line) from None
        except yaml.YAMLError as err:
            raise PolicyError(f"YAML syntax error: {err}", source=source) from None
        if node is None:
            return None
        builder = _Builder(loader, source)
        builder.measure(node, depth=1, path=set())
        return builder.construct(node)
    finally:
        loader.dispose()


def _decode(data: bytes, source: str | None) -> str:
    """UTF-8 bytes (with or without a byte-order mark) to text; anything else is refused."""
    for bom, name in _UTF16_32_BOMS:
        if data.startswith(bom):
            raise PolicyError(
                f"the file is {name} text (it starts with a {name} byte-order mark); "
                "policies are read as UTF-8: save it as UTF-8", source=source, line=1,
            )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PolicyError(
            f"the file is not UTF-8 text: byte 0x{data[err.start]:02x} cannot be decoded (is it "
            "Latin-1 or another legacy encoding?); policies are read as UTF-8: save it as UTF-8",
            source=source, line=line,
        ) from None


def _reader_error(err: yaml.reader.ReaderError, text: str, source: str | None) -> PolicyError:
    """A character YAML forbids (a NUL byte, a control character) as a one-line PolicyError."""
    line = text.count("\n", 0, err.position) + 1 if isinstance(err.position, int) else None
    if err.character == 0:
        what = ("holds a NUL byte; policies are UTF-8 text (is the file UTF-16 without a "
                "byte-order mark, or not text at all?)")
    else:
        what = (f"holds the control character U+{err.character:04X}, which YAML does not allow "
                "in a document; policies are UTF-8 text")
    return PolicyError(f"the file {what}", source=source, line=line)


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that refuses deep nesting while composing and records each alias's line."""

    def __init__(self, text: str, source: str | None) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0
        # (id(parent node), index or id(key node)) -> the 1-based line of the alias there
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and parent is not None and index is not None:
            slot = index if isinstance(index, int) else id(index)
            self.alias_lines[(id(parent), slot)] = event.start_mark.line + 1
        if self.depth >= _MAX_DEPTH:
            raise PolicyError(
                f"YAML nesting deeper than {_MAX_DEPTH} levels is refused",
                source=self.source, line=event.start_mark.line + 1,
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Builder:
    """Measures a composed node graph (aliases shared) and builds the lined containers."""

    def __init__(self, loader: _Loader, source: str | None) -> None:
        self.loader = loader
        self.source = source
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height), expanded

    def children(self, node: yaml.Node) -> list[tuple[yaml.Node, int]]:
        """Each child of ``node`` with the line where it is written (an alias's own line)."""
        lines = self.loader.alias_lines
        if isinstance(node, yaml.SequenceNode):
            return [(item, lines.get((id(node), i), _line(item)))
                    for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return [pair for key, value in node.value for pair in (
                (key, _line(key)), (value, lines.get((id(node), id(key)), _line(value))))]
        return []

    def measure(self, node: yaml.Node, *, depth: int, path: set[int]) -> tuple[int, int]:
        """``(values, height)`` of ``node`` with every alias expanded, or a PolicyError."""
        values, height = 1, 1
        path.add(id(node))
        for child, line in self.children(node):
            if id(child) in path:
                raise PolicyError(
                    "recursive YAML alias: it names a value that contains the alias itself",
                    source=self.source, line=line,
                )
            known = self.sizes.get(id(child))
            if known is None and depth < _MAX_DEPTH:
                known = self.measure(child, depth=depth + 1, path=path)
            if known is None or depth + known[1] > _MAX_DEPTH:
                raise PolicyError(
                    f"YAML nesting deeper than {_MAX_DEPTH} levels (aliases expanded) is refused",
                    source=self.source, line=line,
                )
            values, height = values + known[0], max(height, known[1] + 1)
            if values > _MAX_VALUES:
                raise PolicyError(
                    f"YAML aliases expand this document past {_MAX_VALUES} values; a policy "
                    "this large is refused (a 'billion laughs' document?)",
                    source=self.source, line=line,
                )
        path.discard(id(node))
        self.sizes[id(node)] = (values, height)
        return values, height

    def error(self, message: str, node: yaml.Node) -> PolicyError:
        return PolicyError(message, source=self.source, line=_line(node))

    def tag_error(self, node: yaml.Node) -> PolicyError:
        tag = node.tag
        shown = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
        return self.error(
            f"YAML tag {shown!r} is not allowed: policies are loaded safely and never run code",
            node)

    def construct(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.tag_error(node)
            result = LinedList()
            result.line = _line(node)
            for item, line in self.children(node):
                result.append(self.construct(item))
                result.item_lines.append(line)
            return result
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        if node.tag == _VALUE_TAG:
            return node.value
        if not node.tag.startswith(_TAG) or node.tag.startswith(_TAG + "python/"):
            raise self.tag_error(node)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            raise self.tag_error(node) from None
        except (yaml.YAMLError, ValueError) as err:
            raise self.error(f"bad YAML value: {err}", node) from None

    def mapping(self, node: yaml.MappingNode) -> LinedDict:
        """The mapping's own keys (each once) over the ones merged in with ``<<``.

        Keys keep PyYAML's order: merged keys first, then the mapping's own.
        """
        if node.tag != _MAP_TAG:
            raise self.tag_error(node)
        own, merged, merge_line = LinedDict(), LinedDict(), None
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                if merge_line is not None:
                    raise self.error(f"duplicate merge key '<<' (first at line {merge_line})",
                                     key_node)
                merged, merge_line = self.merge_sources(value_node), _line(key_node)
                continue
            key = self.construct(key_node)
            try:
                hash(key)
            except TypeError:
                raise self.error("a mapping key must be a plain value", key_node) from None
            if key in own:
                raise self.error(f"duplicate key {key!r}", key_node)
            own[key] = self.construct(value_node)
            own.key_lines[key] = _line(key_node)
        result = LinedDict()
        result.line = _line(node)
        for part in (merged, own):
            for key, value in part.items():
                result[key] = own.get(key, value) if part is merged else value
                result.key_lines.setdefault(key, own.key_lines.get(key, part.key_lines[key]))
        return result

    def merge_sources(self, node: yaml.Node) -> LinedDict:
        """The mappings a merge key names, merged; an earlier mapping wins over a later one."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged = LinedDict()
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise self.error(
                    "the merge key '<<' takes a mapping or a list of mappings (such as *base "
                    "or [*base, *other])", source)
            mapping = self.mapping(source)
            for key, value in mapping.items():
                if key not in merged:
                    merged[key] = value
                    merged.key_lines[key] = mapping.key_lines[key]
        return merged
