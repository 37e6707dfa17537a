"""A layer's role in the measured graph, and the init advice that fits it.

The advice for a layer comes from what the layer is (a normalization, an embedding, a head tied
to an embedding) and from the activation that follows it in the check's pass (the module that
received its output as is, through dropout and identities), never from whichever activations
appear somewhere in the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from lightning_init.anatomy import is_embedding, kind_of, layer_fans
from lightning_init.anatomy import is_norm as _is_norm
from lightning_init.check._depth import output_names
from lightning_init.check.records import LayerRecord, ParameterRecord

# The activations after which He et al.'s sqrt(2) (or a gain near it) is the textbook init.
_RELU_LIKE = frozenset({"relu", "leaky_relu", "gelu", "silu", "elu", "selu", "mish",
                        "softplus"})

KAIMING_RELU = ("kaiming_normal(mode=fan_in, nonlinearity=relu) for the weights, zeros for the "
                "biases (He et al. 2015: std = sqrt(2 / fan_in))")
XAVIER_TANH = ("xavier_normal(gain=5/3) or kaiming_normal(nonlinearity=tanh) for the weights, "
               "zeros for the biases (Glorot & Bengio 2010)")
XAVIER = "xavier_normal for the weights, zeros for the biases (Glorot & Bengio 2010)"
LECUN = ("kaiming_normal(nonlinearity=linear) for the weights (LeCun: std = 1 / sqrt(fan_in)), "
         "zeros for the biases, or a normalization layer between blocks")
NORM_ONES = ("set its weight to 1 (ones) and its bias to 0: a normalization layer's weight is "
             "its output's scale (Ioffe & Szegedy 2015; Ba et al. 2016)")
EMBEDDING = ("draw the embedding from N(0, 0.02) (BERT, GPT-2) or N(0, 1 / dim), so that it "
             "enters the network at the scale of the other inputs it is summed with")


def _activation(module: nn.Module) -> str | None:
    kind = kind_of(module)
    return kind.activation if kind is not None and kind.role == "activation" else None


def is_norm(module: nn.Module) -> bool:
    """Normalization layers, by the kinds registry (``lightning_init.anatomy.kinds``)."""
    return _is_norm(module)


def is_relu_like(module: nn.Module) -> bool:
    """ReLU-family and smooth ReLU-like activations (GELU, SiLU, ...), by the kinds registry."""
    return _activation(module) in _RELU_LIKE


def _passes_through(module: nn.Module) -> bool:
    kind = kind_of(module)
    return kind is not None and kind.role == "pass"


def follower(index: int, layers: Sequence[LayerRecord], modules: Sequence[nn.Module]) -> int | None:
    """The index of the module that receives layer ``index``'s output as is (through dropout,
    identities and flattening), or ``None`` when it is summed or transformed in between."""
    current = index
    for _ in range(len(layers)):
        nxt = next((layer.index for layer in layers[current + 1:] if layer.source == current),
                   None)
        if nxt is None or not _passes_through(modules[nxt]):
            return nxt
        current = nxt
    return None  # pragma: no cover - a cycle cannot happen in forward order


def output_layers(produced: Sequence[int], layers: Sequence[LayerRecord]) -> list[str]:
    """The output layers by data flow: from each module whose output the model returned as is
    (``produced``), back through what each module received as is (activations, dropout,
    norms, views) to the first weight layer; ``[]`` when none is reached that way (the output
    is a normalized stream, or a sum).

    Example:
        >>> import torch
        >>> from lightning_init.check import check_init
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 1), torch.nn.Sigmoid())
        >>> report = check_init(net, torch.randn(16, 4))
        >>> output_layers([3], report.layers), output_layers([1], report.layers)
        (['2'], ['0'])
    """
    found: list[str] = []
    for index in produced:
        current: int | None = index
        while current is not None and not layers[current].transforms:
            current = layers[current].source
        if current is not None and layers[current].name not in found:
            found.append(layers[current].name)
    return found


def with_depth_roles(layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
                     heads: Sequence[str] | None) -> list[LayerRecord]:
    """``layers`` with ``output_layer`` (``heads``, or where not known the last weight layer)
    and ``normalized`` (the output goes straight into a normalization) set.

    Example:
        >>> import torch
        >>> from lightning_init.check import check_init
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8),
        ...                           torch.nn.Linear(8, 2))
        >>> report = check_init(net, torch.randn(16, 4))
        >>> [(layer.output_layer, layer.normalized) for layer in report.layers]
        [(False, True), (False, False), (True, False)]
    """
    outputs = output_names(layers, heads)
    return [replace(layer, output_layer=layer.name in outputs,
                    normalized=_normalized(layer.index, layers, modules)) for layer in layers]


def _normalized(index: int, layers: Sequence[LayerRecord], modules: Sequence[nn.Module]
                ) -> bool:
    following = follower(index, layers, modules)
    return following is not None and is_norm(modules[following]) \
        and starved_norm(index, layers, modules) is None


def norm_eps(norm: nn.Module) -> float | None:
    """A norm's eps as torch's norms (``eps``) and transformers' RMSNorms
    (``variance_epsilon``) hold it, when it is a float; else ``None`` (``nn.RMSNorm``'s
    default ``eps=None``)."""
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    return eps if isinstance(eps, float) else None


def starved_norm(index: int, layers: Sequence[LayerRecord], modules: Sequence[nn.Module]
                 ) -> int | None:
    """The norm that layer ``index`` feeds as is, where the variance it receives is below the
    norm's eps; else ``None``. A norm divides by sqrt(var + eps): below its eps it divides by
    about sqrt(eps) and passes the scale on instead of removing it (BatchNorm weights
    N(0, 0.02) under TensorFlow's eps 1e-3: every block shrinks the signal ~30x)."""
    following = follower(index, layers, modules)
    if following is None or not is_norm(modules[following]):
        return None
    eps = norm_eps(modules[following])
    std = layers[index].output_std
    starved = eps is not None and math.isfinite(std) and std * std < eps
    return following if starved else None


def init_for_activation(module: nn.Module | None) -> str:
    """The textbook initializer for the layer that feeds ``module`` (an activation or not)."""
    if module is None:
        return LECUN
    activation = _activation(module)
    if activation in _RELU_LIKE:
        return KAIMING_RELU
    if activation == "tanh":
        return XAVIER_TANH
    if activation == "sigmoid":
        return XAVIER
    return LECUN


def zero_weight(index: int, modules: Sequence[nn.Module],
                parameters: Sequence[ParameterRecord], layers: Sequence[LayerRecord]) -> bool:
    """Whether the module's ``weight`` is all zeros (its norm is exactly 0)."""
    name = layers[index].name
    weight = f"{name}.weight" if name else "weight"
    return any(param.name == weight and param.weight_norm == 0 for param in parameters)


def advice(index: int, layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
           parameters: Sequence[ParameterRecord]) -> str:
    """What to do about layer ``index``: by its role, then by the activation that follows it.

    Example:
        >>> import torch
        >>> from lightning_init.check import check_init
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(),
        ...                           torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> report = check_init(net, torch.randn(8, 4))
        >>> advice(0, report.layers, list(net), report.parameters)[:22]
        'xavier_normal(gain=5/3'
        >>> advice(3, report.layers, list(net), report.parameters)[:14]
        'kaiming_normal'
    """
    module = modules[index]
    if is_norm(module) and zero_weight(index, modules, parameters, layers):
        return NORM_ONES
    if is_embedding(module):
        return EMBEDDING
    following = follower(index, layers, modules)
    return init_for_activation(modules[following] if following is not None else None)


def tied_embedding(head: nn.Module, layers: Sequence[LayerRecord],
                   modules: Sequence[nn.Module]) -> LayerRecord | None:
    """The embedding whose weight is the head's weight (one Parameter), if any."""
    weight = getattr(head, "weight", None)
    if weight is None:
        return None
    for layer, module in zip(layers, modules, strict=True):
        if module is not head and is_embedding(module) and module.weight is weight:
            return layer
    return None


def fan_in(module: nn.Module) -> int | None:
    """Inputs per output unit of a weight layer, through its registered layout (transformers'
    ``Conv1D`` stored transposed, a layer of the user's from ``register_layout``); ``None``
    for other modules."""
    fans = layer_fans(module)
    return fans[0] if fans is not None else None


def fan_out(module: nn.Module) -> int | None:
    """Outputs per input unit, as He et al. (2015) count them for the backward pass: output
    units times receptive field (``None`` where :func:`fan_in` is)."""
    fans = layer_fans(module)
    return fans[1] if fans is not None else None


def gains(module: nn.Module, weight_norm: float) -> tuple[float, float] | None:
    """``(std * sqrt(fan_in), std * sqrt(fan_out))`` of a weight layer from its weight's norm:
    the factors by which it scales a random input forwards and a random gradient backwards
    (both 1 for LeCun, sqrt(2) for He et al. 2015 in its mode); ``None`` for other modules.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(64, 16)
        >>> _ = torch.nn.init.normal_(layer.weight, std=1.0)
        >>> forward, backward = gains(layer, float(layer.weight.detach().norm()))
        >>> round(forward), round(backward)
        (8, 4)
    """
    fan = fan_in(module)
    out = fan_out(module)
    if fan is None or out is None:
        return None
    std = weight_norm / math.sqrt(module.weight.numel())
    return std * math.sqrt(fan), std * math.sqrt(out)
