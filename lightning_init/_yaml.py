"""Safe YAML loading that remembers the line of every mapping key and sequence item.

Only the YAML core types are constructed (``yaml.SafeLoader``): a ``!!python/...`` tag, or
any tag the safe loader does not know, is a :class:`~lightning_init.PolicyError` and is never
executed.
"""

from __future__ import annotations

from typing import Any

import yaml

from lightning_init.errors import PolicyError

__all__ = ["LinedDict", "LinedList", "line_of", "load_yaml"]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


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


def load_yaml(text: str, *, source: str | None = None) -> Any:
    """Parse ``text`` safely into ``LinedDict``/``LinedList``/scalars.

    Raises:
        PolicyError: a syntax error (with its line) or an unsafe/unknown tag.

    Example:
        >>> load_yaml("rules: []\\nseed: 3\\n")
        {'rules': [], 'seed': 3}
        >>> load_yaml("x: !!python/object/apply:os.system ['echo hi']")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: line 1: YAML tag '!!python/object/apply:os.system' ...
    """
    loader = yaml.SafeLoader(text)
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
        return _construct(loader, node, source)
    finally:
        loader.dispose()


def _tag_error(node: yaml.Node, source: str | None) -> PolicyError:
    tag = node.tag
    shown = "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag
    return PolicyError(
        f"YAML tag {shown!r} is not allowed: policies are loaded safely and never run code",
        source=source,
        line=node.start_mark.line + 1,
    )


def _construct(loader: yaml.SafeLoader, node: yaml.Node, source: str | None) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            raise _tag_error(node, source)
        loader.flatten_mapping(node)  # merge keys (<<) the safe way
        result = LinedDict()
        result.line = line
        for key_node, value_node in node.value:
            key = _construct(loader, key_node, source)
            try:
                hash(key)
            except TypeError:
                raise PolicyError(
                    "a mapping key must be a plain value", source=source,
                    line=key_node.start_mark.line + 1,
                ) from None
            if key in result:
                raise PolicyError(
                    f"duplicate key {key!r}", source=source, line=key_node.start_mark.line + 1
                )
            result[key] = _construct(loader, value_node, source)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise _tag_error(node, source)
        result_list = LinedList()
        result_list.line = line
        for item in node.value:
            result_list.append(_construct(loader, item, source))
            result_list.item_lines.append(item.start_mark.line + 1)
        return result_list
    if not node.tag.startswith("tag:yaml.org,2002:") or node.tag.startswith(
        "tag:yaml.org,2002:python/"
    ):
        raise _tag_error(node, source)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError:
        raise _tag_error(node, source) from None
    except (yaml.YAMLError, ValueError) as err:
        raise PolicyError(f"bad YAML value: {err}", source=source, line=line) from None
