"""The check's records: what was measured per layer and per parameter, each problem found,
and what a check ran on (kept for the suggestion's re-check). Data only: no measuring, no
judging, no rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["CheckProblem", "CheckSubject", "LayerRecord", "ParameterRecord"]


def _grad_to_weight(record: LayerRecord | ParameterRecord) -> float | None:
    """``grad_norm / weight_norm`` (``None`` when either is missing or zero)."""
    if record.grad_norm is None or not record.weight_norm:
        return None
    return record.grad_norm / record.weight_norm


@dataclass(frozen=True)
class LayerRecord:
    """What one module's output looked like in the check's forward pass.

    Attributes:
        index: position in forward order (0 = first module to produce an output).
        name: the module's qualified name in the model given (``"net.0"``).
        type: the module's class name (``"Linear"``).
        shape: the measured output's shape.
        output_mean: mean over all elements of the output.
        output_std: standard deviation over all elements (population, ``unbiased=False``).
        input_dependence: root-mean-square over features of the spread across the leading
            (batch) dimension, divided by the output's root-mean-square; 0 when every sample
            gives the same output, about 1 for a centred input-driven output. ``None`` with a
            single sample.
        dead_fraction: ReLU family only: fraction of units (columns; channels for ``N, C, ...``
            outputs) that are zero for every sample.
        saturated_fraction: tanh / sigmoid (and hard variants) only: fraction of outputs in the
            flat tails (``|tanh| > 0.99``, ``sigmoid < 0.01`` or ``> 0.99``).
        nonfinite: how many output elements are NaN or Inf.
        grad_norm: L2 norm of the gradient of all the module's own parameters, if any.
        weight_norm: L2 norm of the module's own parameters, if any.
        inflow_dependence: the input dependence of the module's own input (integer indices
            read as numbers: all-zero ``token_type_ids`` give 0); ``None`` when not measured.
        inflow_rms: the root-mean-square of the module's own (floating-point) input.
        source: the index of the module whose output this module received as is (same
            storage: a view, an in-place op); ``None`` when its input was computed in between
            (a residual sum, a functional op) or is the model's input.
        transforms: whether the module transforms its input with its own weight matrix (the
            kinds registry's ``transforms``: weight layers, attention, recurrent layers).
        output_layer: whether it is one of the model's output layers, by data flow: the last
            weight layers before what the loss reads (the anatomy's heads where the pass was
            traced, else the weight layers behind the modules whose output the model
            returned, else the last weight layer called). Left out of the depth trends and
            of ``min_layer_gain`` (a head started small is a gate).
        normalized: whether its output goes straight into a normalization (through dropout,
            identities, views), which removes its scale: left out of the forward depth trend
            and of the gain verdict.
    """

    index: int
    name: str
    type: str
    shape: tuple[int, ...]
    output_mean: float
    output_std: float
    input_dependence: float | None
    dead_fraction: float | None
    saturated_fraction: float | None
    nonfinite: int
    grad_norm: float | None = None
    weight_norm: float | None = None
    inflow_dependence: float | None = None
    inflow_rms: float | None = None
    source: int | None = None
    transforms: bool = False
    output_layer: bool = False
    normalized: bool = False

    grad_to_weight = property(_grad_to_weight)


@dataclass(frozen=True)
class ParameterRecord:
    """One parameter's gradient in the check's backward pass.

    Attributes:
        name: the parameter's qualified name (``"net.0.weight"``).
        layer: the qualified name of the module owning it.
        weight_norm: L2 norm of the parameter.
        grad_norm: L2 norm of its gradient; ``None`` when the loss does not depend on it.
    """

    name: str
    layer: str
    weight_norm: float
    grad_norm: float | None

    grad_to_weight = property(_grad_to_weight)


@dataclass(frozen=True)
class CheckProblem:
    """One verdict: what is wrong, where, the number, the expectation and a likely fix.

    Attributes:
        kind: ``"nonfinite"``, ``"scale"``, ``"input_dependence"``, ``"dead_units"``,
            ``"saturation"``, ``"gradient"``, ``"loss"``, ``"gain"`` or ``"embedding"``.
        layers: the qualified names concerned (first one first).
        message: the full sentence, naming the layer, the number, the expectation and the fix.
    """

    kind: str
    layers: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CheckSubject:
    """What a check ran on, kept by :func:`~lightning_init.check_init` for the re-check."""

    model: nn.Module
    inputs: Any
    options: dict[str, Any] = field(default_factory=dict)
