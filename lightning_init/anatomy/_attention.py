"""Attention calls from the traced nodes: the logits' std and the weight layers that make the
queries and the keys (through rotary embeddings, norms and reshapes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_init.anatomy.record import AttentionSite

if TYPE_CHECKING:
    from lightning_init.anatomy._read import Reader

__all__ = ["attention_sites"]

_MATMULS = frozenset({"matmul", "__matmul__", "bmm", "einsum", "baddbmm"})


def attention_sites(reader: Reader) -> list[AttentionSite]:
    """One site per ``scaled_dot_product_attention`` or 4-D softmax call of the pass."""
    sites = []
    for call in reader.trace.attention:
        if call["op"] == "softmax":
            query, key = _score_operands(reader, call.get("scores"))
        else:
            query, key = call.get("query"), call.get("key")
        sites.append(AttentionSite(call["op"], float(call["std"]), _makers(reader, query),
                                   _makers(reader, key)))
    return sites


def _score_operands(reader: Reader, scores: int | None) -> tuple[int | None, int | None]:
    """A softmax's scores back to their ``q @ k^T``: (the query's node, the key's)."""
    if scores is None:
        return None, None
    stops, _ = reader.graph.back_until(
        [scores], stop=lambda i: reader.nodes[i].name in _MATMULS
        and len(reader.nodes[i].parents) == 2 and not reader.nodes[i].params,
        through=lambda i: not reader.graph.is_weight(i))
    if not stops:
        return None, None
    parents = reader.nodes[max(stops)].parents
    return parents[0], parents[1]


def _makers(reader: Reader, index: int | None) -> tuple[str, ...]:
    """The weight layers a query or a key comes from."""
    if index is None:
        return ()
    stops, _ = reader.graph.back_until([index], stop=reader.graph.is_weight,
                                       through=lambda i: reader.nodes[i].kind != "input")
    return tuple(dict.fromkeys(reader.site(i) for i in stops))
