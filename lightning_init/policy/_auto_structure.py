"""The automatic policy's rules read from the module types and the anatomy's norms and
embeddings: norms at their probed identity, the stream's embeddings, LSTM/GRU and
``MultiheadAttention`` input projections. Functions of the :class:`Builder` they add to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_init.anatomy import kind_of

if TYPE_CHECKING:
    from lightning_init.policy._auto_build import Builder

__all__ = ["HEAD_STD", "KEPT", "NORMALIZED_WEIGHT_SOURCE", "embedding_rules", "norm_rules",
           "normalized_weight", "position_rules", "structure_rules"]

HEAD_STD = "head_gain / (sqrt(fan_in) * head_input_rms)"
KEPT = ("a deliberate zero-init, kept: zeros on a path to the loss receive a gradient and "
         "open in training (Goyal et al. 2017, zero_init_last; Zhang et al. 2019, Fixup; a "
         "zero head for fine-tuning)")


def norm_rules(self: Builder, kept: set[str]) -> None:
    """Norms at identity by their probed formula (weight 1 for ``w * x_hat``, 0 for
    ``(1 + w) * x_hat``); zero gates kept."""
    modules = dict(self.model.named_modules())
    by_value: dict[Any, list[str]] = {}
    for name, site in self.anatomy.norms.items():
        if not isinstance(getattr(modules.get(name), "weight", None), nn.Parameter):
            continue
        value = "kept" if f"{name}.weight" in kept else site.identity
        if value is not None:
            by_value.setdefault(value, []).append(name)
    for value, names in by_value.items():
        if value == "kept":
            self.add("normalization layer, zero scale (kept)", names,
                     {"weight": "zeros", "bias": "zeros"}, KEPT,
                     "an all-zero norm weight closing a residual branch")
            continue
        weight = "ones" if value == 1 else "zeros" if value == 0 else \
            {"init": "constant", "val": float(value)}
        formula = "w * x_hat" if value == 1 else "(1 + w) * x_hat" if value == 0 \
            else f"({1 - value:g} + w) * x_hat"
        self.add("normalization layer", names, {"weight": weight, "bias": "zeros"},
                 "identity at init (Ioffe & Szegedy 2015; Ba et al. 2016): the weight at "
                 "which the norm leaves the normalized input's scale as is",
                 f"a probe found it computes {formula}")


def embedding_rules(self: Builder) -> None:
    heads = {tie for head in self.anatomy.heads for tie in head.tied}
    sites = self.anatomy.embeddings.values()
    width = max((site.width for site in sites), default=0)
    names = [site.name for site in sites if f"{site.name}.weight" not in heads
             and site.width == width and isinstance(_module(self, site.name), nn.Embedding)]
    if self.tied:
        self.add("input embedding beside the tied one", names,
                 {"weight": {"init": "normal", "std": HEAD_STD}},
                 "the tied token embedding's scale (it sets the residual stream's)",
                 "summed into the stream with the embedding the head is tied to")
    else:
        self.add("input embedding", names, {"weight": {"init": "normal", "std": 1.0}},
                 "unit-scale embeddings (Vaswani et al. 2017 scale theirs by sqrt(d_model); "
                 "T5: N(0, 1)): the residual stream starts at scale 1",
                 "a lookup of the stream's width")


def position_rules(self: Builder) -> None:
    """A learned position table added as a whole parameter (ViT's ``position_embeddings``,
    minGPT's ``pos_emb``) at the rms of what it is added to (``position_rms``, measured), as
    the lookups summed with each other are drawn alike (GPT-2, BERT). A frozen one
    (``requires_grad=False``: a fixed sin-cos table) is left as it is."""
    heads = {tie for head in self.anatomy.heads for tie in head.tied}
    for found in self.anatomy.position_tables():
        if found.table in heads or not self.model.get_parameter(found.table).requires_grad:
            continue  # a frozen table is a fixed encoding (DiT's sin-cos), not a learned one
        owner, _, leaf = found.table.rpartition(".")
        self.positions.append(found.table)
        self.add("learned position table", [owner], {leaf: {"init": "normal",
                                                            "std": "position_rms"}},
                 "a table summed with the tokens at their scale: position_rms, the rms of what "
                 "it is added to, measured with this policy's init (GPT-2 and BERT draw their "
                 "summed lookups alike; a table far smaller than the tokens carries almost "
                 "nothing of the sum, and the model starts blind to order)",
                 f"`{found.table}` is added as a whole to the output of "
                 f"{', '.join(f'`{name}`' for name in found.stream)}")
    if self.positions:
        self.variables["position_rms"] = 1.0  # measured


def _module(self: Builder, name: str) -> nn.Module | None:
    try:
        return self.model.get_submodule(name)
    except AttributeError:
        return None


def structure_rules(self: Builder) -> None:
    """LSTM/GRU and ``MultiheadAttention`` input projections, by the kinds registry."""
    by_kind: dict[str, list[str]] = {}
    for name, module in self.model.named_modules():
        kind = kind_of(module)
        if name not in self.anatomy.called or kind is None:
            continue
        if isinstance(module, (nn.LSTM, nn.LSTMCell)):
            by_kind.setdefault("lstm", []).append(name)
        elif isinstance(module, (nn.GRU, nn.GRUCell)):
            by_kind.setdefault("gru", []).append(name)
        elif isinstance(module, nn.MultiheadAttention):
            by_kind.setdefault("mha", []).append(name)
    recurrent = ("Xavier input weights (Glorot & Bengio 2010), orthogonal hidden weights per "
                 "gate (Saxe et al. 2014, arXiv:1312.6120)")
    self.add("LSTM", by_kind.get("lstm", []), {
        "weight_ih*": {"init": "xavier_uniform", "chunks": 4},
        "weight_hh*": {"init": "orthogonal", "chunks": 4},
        "bias_ih*": {"chunks": ["zeros", "ones", "zeros", "zeros"]},
        "bias_hh*": "zeros"},
        recurrent + ", forget-gate bias 1 (Jozefowicz et al. 2015)")
    self.add("GRU", by_kind.get("gru", []), {
        "weight_ih*": {"init": "xavier_uniform", "chunks": 3},
        "weight_hh*": {"init": "orthogonal", "chunks": 3}, "bias_*": "zeros"}, recurrent)
    self.add("multi-head attention input projection", by_kind.get("mha", []), {
        "in_proj_weight": "xavier_uniform", "in_proj_bias": "zeros"},
        "torch.nn.MultiheadAttention._reset_parameters: Xavier uniform (Glorot & Bengio "
        "2010)")


NORMALIZED_WEIGHT_SOURCE = (
    "a parametrization of the weight divides its scale out (spectral normalization, Miyato et "
    "al. 2018, arXiv:1802.05957: W / sigma(W)): no std drawn for the stored weight reaches the "
    "forward pass, and it sets only the optimizer's step relative to the weight (under Adam "
    "about lr / std a step; a small draw makes each step rotate the normalized weight): its "
    "values are kept, as every scale the forward pass does not constrain")


def normalized_weight(module: nn.Module) -> bool:
    """Whether a parametrization of ``module.weight`` divides its scale out: scaling every
    stored tensor behind it leaves the weight unchanged (``spectral_norm``; not ``weight_norm``,
    whose magnitude ``g`` scales too). Probed with the parametrizations in eval mode (no power
    iteration) and the stored values restored.

    Example:
        >>> from torch.nn.utils import parametrizations
        >>> normalized_weight(parametrizations.spectral_norm(nn.Linear(4, 3)))
        True
        >>> normalized_weight(parametrizations.weight_norm(nn.Linear(4, 3)))
        False
        >>> normalized_weight(nn.Linear(4, 3))
        False
    """
    parametrizations = getattr(module, "parametrizations", None)
    if not isinstance(parametrizations, nn.ModuleDict) or "weight" not in parametrizations:
        return False
    chain = parametrizations["weight"]
    stored = [tensor for _, tensor in chain.named_parameters()]
    if not stored or any(tensor.is_meta or not tensor.is_floating_point() for tensor in stored):
        return False
    modes = [(part, part.training) for part in chain.modules()]
    saved = [tensor.detach().clone() for tensor in stored]
    try:
        with torch.no_grad():
            for part, _ in modes:
                part.training = False
            before = module.weight.detach().clone()
            for tensor in stored:
                tensor.mul_(2.0)
            after = module.weight.detach()
            return bool(torch.isfinite(before).all()) and float(before.abs().max()) > 0 \
                and torch.allclose(before, after, rtol=1e-4, atol=0)
    finally:
        with torch.no_grad():
            for tensor, value in zip(stored, saved, strict=True):
                tensor.copy_(value)
        for part, training in modes:
            part.training = training
