"""From measured records to verdicts that read like a reviewer's: layer, number, expectation, fix.

Thresholds (defaults in ``DEFAULT_THRESHOLDS``, all overridable):

- ``min_input_dependence``: a module output whose spread across the batch is below this
  fraction of its scale no longer depends on the input (PyTorch's default init on a deep plain
  ReLU net: the weights shrink the signal by ~0.4x per layer and the bias sets a floor).
- ``max_scale_drift``: the output std of the weight layers (Linear, Conv, ...) below the output
  layers may change by at most this factor from the first to the last one (a log-linear fit
  over depth; 3+ layers; a layer whose output goes straight into a normalization is left
  out). Xavier on a 30-layer ReLU net shrinks by 0.71x per layer (He et al. 2015), ~2e4x in
  all. The output layers (``LayerRecord.output_layer``, see
  :mod:`lightning_init.check._depth`) are left out of both depth trends: a head drawn at
  scale s ends the series s away from the body, a step at the top and no trend over depth.
- ``max_dead_fraction``: ReLU units zero for every sample.
- ``max_saturated_fraction``: tanh / sigmoid outputs in the flat tails.
- ``max_grad_drift``: gradient-to-weight norm ratio may change by at most this factor over
  depth (a log-linear fit over 3+ layers) below the output layers. A series is each role that
  repeats across blocks (``layers.#.mlp.fc1``), or when none does, every weight layer below
  the output layers. A head drawn at scale s has a ratio of about 1/s and multiplies every
  lower layer's gradient by s alike, so a head started small on purpose (a regression head, a
  zero-ish classifier) makes a 1/s^2 step that is no trend over depth; its scale is the loss
  and gain verdicts' to judge.
- ``max_loss_ratio``: cross-entropy at init should be about ln(C) (uniform predictions);
  flagged above this multiple of ln(C). Without labels, when the output is logits over its
  last dimension, the cross-entropy against uniformly drawn labels is used (its expectation,
  ``-mean(log_softmax(logits))``, is ln(C) for uniform predictions).
- ``max_logit_std``: the initial loss is also accepted up to the expected cross-entropy of
  logits of this std (i.i.d. normal, labels independent of them: ln C + (1 - 1/C) s^2 / 2 to
  second order; :mod:`lightning_init.check._theory`). A unit-gain output layer (LeCun, or He's
  at linear gain) on unit-scale features gives logits of std about 1, and a few classes' draw
  of C - 1 random directions spreads a seed's by up to 2x: for C = 2 unit logits alone give
  1.3x ln 2, so the ratio above would fail valid small heads. From about C = 30 on the ratio
  is the larger limit.
- ``max_layer_gain``: a weight layer's forward gain ``std(W) * sqrt(fan_in)`` (the factor by
  which it multiplies the root-mean-square of a random input). Fan-in inits give 1 (LeCun),
  sqrt(2) (He et al. 2015) or 5/3 (tanh); the largest textbook gain, xavier with gain 5/3 on a
  layer much wider in than out, is 5/3 * sqrt(2) ~ 2.4. A layer whose output goes straight
  into a normalization is exempt (the norm removes its scale).
- ``min_layer_gain``: the other way: a weight layer that shrinks both a random input
  (fan_in) and a random gradient (fan_out) below this factor leaves its branch inert (an
  all-zero weight is a gate, judged by the look-ahead step instead). Output layers are exempt:
  a head started small is a gate too, as a zero head is (its loss opens it; a classifier's
  scale is the loss verdict's), while ``max_layer_gain`` still applies to them.
- ``max_embedding_ratio``: an embedding summed with another may be at most this many times
  larger (rms), and the branches added to the stream an embedding starts must add at least
  ``1 / max_embedding_ratio`` of its rms (:mod:`lightning_init.check.embeddings`). At 100x the
  smaller operand carries 1e-4 of the sum's variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_init.anatomy import transforms
from lightning_init.check._depth import fit_factor, gradient_series, scale_series, trend
from lightning_init.check._theory import expected_cross_entropy
from lightning_init.check.records import CheckProblem, LayerRecord, ParameterRecord
from lightning_init.check.roles import (
    KAIMING_RELU,
    LECUN,
    XAVIER,
    XAVIER_TANH,
    advice,
    gains,
    init_for_activation,
    norm_eps,
    starved_norm,
    tied_embedding,
    zero_weight,
)

DEFAULT_THRESHOLDS: dict[str, float] = {
    "min_input_dependence": 0.01,
    "max_scale_drift": 100.0,
    "max_dead_fraction": 0.9,
    "max_saturated_fraction": 0.3,
    "max_grad_drift": 1000.0,
    "max_loss_ratio": 1.5,
    "max_logit_std": 2.0,
    "max_layer_gain": 4.0,
    "min_layer_gain": 0.01,
    "max_embedding_ratio": 100.0,
}


def _name(layer: LayerRecord) -> str:
    return f"`{layer.name}`" if layer.name else "the model"


def _number(value: float) -> str:
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.2g}"
    return f"{value:.4g}" if abs(value) >= 100 else f"{value:.3g}"


def _listing(names: Sequence[str], limit: int = 4) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[: limit - 1]) + f", ..., {names[-1]}"


def suggested_init(modules: Sequence[nn.Module]) -> str:
    """The textbook initializer for the activations the model uses (the kinds registry's)."""
    found = {init_for_activation(module) for module in modules}
    return next((init for init in (KAIMING_RELU, XAVIER_TANH, XAVIER) if init in found), LECUN)


def is_weight_layer(module: nn.Module) -> bool:
    """Modules that transform activations with their own weight matrix (the kinds registry's
    :func:`~lightning_init.anatomy.transforms`). Embeddings are lookups, not transformations,
    and are left out of depth trends."""
    return transforms(module)


def verdicts(
    layers: Sequence[LayerRecord],
    modules: Sequence[nn.Module],
    parameters: Sequence[ParameterRecord],
    thresholds: dict[str, float],
    *,
    input_nonfinite: int,
    batch_size: int | None,
    loss: float | None,
    num_classes: int | None,
    loss_is_surrogate: bool,
    labels: bool = True,
    unreachable: frozenset[str] = frozenset(),
) -> list[CheckProblem]:
    """Every problem found, most fundamental first.

    ``labels=False``: ``loss`` is the label-free cross-entropy of logits (see
    ``max_loss_ratio``). ``unreachable``: parameters whose exact zero gradient no init changes
    (the loss does not read what they compute); they are left to a note. The layers' roles in
    the depth trends (``output_layer``, ``normalized``) are read from their records.
    """
    # 1. NaN / Inf: everything measured after the first such module is meaningless.
    bad = [layer for layer in layers if layer.nonfinite]
    if bad or input_nonfinite:
        return [_nonfinite_problem(bad, layers, input_nonfinite)]
    problems = _scale_problems(layers, modules, parameters, thresholds)
    dead = _dead_layers(layers, thresholds)
    problems += _dead_problems(dead, layers, modules, parameters, thresholds)
    problems += _saturation_problems(layers, modules, thresholds)
    problems += _dependence_problems(layers, modules, parameters, thresholds, dead, batch_size)
    problems += _gradient_problems(layers, modules, parameters, thresholds, loss_is_surrogate,
                                   unreachable)
    problems += _loss_problems(layers, modules, thresholds, loss, num_classes, labels)
    problems += _gain_problems(layers, modules, parameters, thresholds)
    return problems


def _layer_fix(name: str, layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
               parameters: Sequence[ParameterRecord]) -> str:
    layer = next((layer for layer in layers if layer.name == name), None)
    return _fix(layer, layers, modules, parameters) if layer is not None else f"use {LECUN}"


def _fix(layer: LayerRecord, layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
         parameters: Sequence[ParameterRecord]) -> str:
    """The advice for ``layer`` as an imperative: ``"use kaiming_normal(...)"``, ``"set its
    weight to 1 ..."``."""
    text = advice(layer.index, layers, modules, parameters)
    return text if text.startswith(("set ", "draw ")) else f"use {text}"


def _scale_problems(layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
                    parameters: Sequence[ParameterRecord],
                    thresholds: dict[str, float]) -> list[CheckProblem]:
    """Activation scale across depth: a log-linear fit over the output std of the weight layers
    below the output layers (:func:`~lightning_init.check._depth.scale_series`)."""
    series = scale_series(layers)
    if len(series) < 3:
        return []
    stds = [layer.output_std for layer in series]
    factor = fit_factor(stds)
    total = trend(stds)
    limit = thresholds["max_scale_drift"]
    if limit >= total >= 1 / limit:
        return []
    first, last = series[0], series[-1]
    verb = "grow" if total > 1 else "shrink"
    return [CheckProblem(
        "scale",
        (first.name, last.name),
        f"activations {verb} by about {factor:.2f}x per layer from {_name(first)} "
        f"(std {_number(first.output_std)}) to {_name(last)} (std {_number(last.output_std)}), "
        f"{_number(total if total > 1 else 1 / total)}x over {len(stds)} weight layers "
        f"(expected: within {_number(limit)}x, about 1.0x per layer) -> "
        f"{_starved_fix(series, layers, modules) or _fix(first, layers, modules, parameters)}",
    )]


def _starved_fix(series: Sequence[LayerRecord], layers: Sequence[LayerRecord],
                 modules: Sequence[nn.Module]) -> str | None:
    """The advice where most layers of a scale trend feed norms that get a variance below
    their eps: those norms' weights set the scale."""
    starved = [index for layer in series
               if (index := starved_norm(layer.index, layers, modules)) is not None]
    if 2 * len(starved) < len(series):
        return None
    eps = norm_eps(modules[starved[0]])
    return (f"the norms these layers feed ({_name(layers[starved[0]])} and "
            f"{len(starved) - 1} more) receive a variance below their eps ({eps:g}), so they "
            "divide by about sqrt(eps) instead of removing the scale, and their weights set "
            "it: set the norms' weights to 1 and their biases to 0 (torch's defaults; He et "
            "al. 2016), or draw the layers feeding them larger")


def _lacked_input(layer: LayerRecord, limit: float) -> bool:
    """The module's own input already did not vary across the batch: whatever its output
    lacks, the module did not lose it."""
    return layer.inflow_dependence is not None and layer.inflow_dependence < limit


def _dead_layers(layers: Sequence[LayerRecord], thresholds: dict[str, float]
                 ) -> list[LayerRecord]:
    dead_limit = thresholds["max_dead_fraction"]
    dep_limit = thresholds["min_input_dependence"]
    return [layer for layer in layers
            if layer.dead_fraction is not None and layer.dead_fraction > dead_limit
            and not _lacked_input(layer, dep_limit)]


def _dead_problems(dead: Sequence[LayerRecord], layers: Sequence[LayerRecord],
                   modules: Sequence[nn.Module], parameters: Sequence[ParameterRecord],
                   thresholds: dict[str, float]) -> list[CheckProblem]:
    if not dead:
        return []
    dead_limit = thresholds["max_dead_fraction"]
    worst = max(layer.dead_fraction or 0.0 for layer in dead)
    first = dead[0]
    more = _listing([_name(d) for d in dead[1:]])
    others = f"; {len(dead) - 1} more ReLU layers too ({more}, up to {100 * worst:.0f}%)" \
        if len(dead) > 1 else ""
    feeding = first.source if first.source is not None else first.index - 1
    fix = _fix(layers[feeding], layers, modules, parameters) if feeding >= 0 else ""
    return [CheckProblem(
        "dead_units",
        tuple(layer.name for layer in dead),
        f"{_name(first)} ({first.type}): {100 * (first.dead_fraction or 0):.0f}% of its units "
        f"are zero for every sample of the batch (expected: at most {100 * dead_limit:.0f}%)"
        f"{others} -> check for large negative biases (set biases to zeros)"
        + (f" and {fix}" if fix else ""),
    )]


def _saturation_problems(layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
                         thresholds: dict[str, float]) -> list[CheckProblem]:
    sat_limit = thresholds["max_saturated_fraction"]
    saturated = [layer for layer in layers if layer.saturated_fraction is not None
                 and layer.saturated_fraction > sat_limit]
    if not saturated:
        return []
    first = saturated[0]
    others = f"; {len(saturated) - 1} more layers too " \
        f"({_listing([_name(s) for s in saturated[1:]])})" if len(saturated) > 1 else ""
    return [CheckProblem(
        "saturation",
        tuple(layer.name for layer in saturated),
        f"{_name(first)} ({first.type}): {100 * (first.saturated_fraction or 0):.0f}% of its "
        f"outputs are saturated (|y| in the flat tails, gradient < 2% of its peak; expected: "
        f"at most {100 * sat_limit:.0f}%){others} -> the weights feeding it are too large; "
        f"use {suggested_init([modules[first.index]])}",
    )]


def _dependence_problems(
    layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
    parameters: Sequence[ParameterRecord], thresholds: dict[str, float],
    dead: Sequence[LayerRecord], batch_size: int | None,
) -> list[CheckProblem]:
    """Outputs that no longer depend on the input, blamed on the module that lost it: one
    whose own input still varied across the batch."""
    dep_limit = thresholds["min_input_dependence"]
    flagged_dead = {layer.name for layer in dead}
    flat = [layer for layer in layers if layer.input_dependence is not None
            and layer.input_dependence < dep_limit and layer.name not in flagged_dead]
    output_flat = bool(flat) and flat[-1].index == layers[-1].index
    # Lost for good: the model's output ignores the input, or the module cannot learn its
    # way out (its own parameters get exactly zero gradient). A constant that is summed into
    # a varying stream (token types, positions) and learns is no failure.
    lost = [layer for layer in flat if not _lacked_input(layer, dep_limit)
            and (output_flat or layer.grad_norm == 0)]
    if not lost and output_flat and not dead:  # lost in functional code between modules
        varying = [layer for layer in layers if layer.input_dependence is not None
                   and layer.input_dependence >= dep_limit]
        lost = [next((layer for layer in flat if layer.index > varying[-1].index), flat[-1])
                if varying else flat[0]]
    if not lost:
        return []
    first = lost[0]
    flat = [layer for layer in flat if layer.index >= first.index]
    later = [layer for layer in layers if layer.index > first.index]
    if len(flat) == 1:
        also = ""
    elif len(flat) - 1 == len(later):
        also = f"; so do all {len(later)} modules after it (down to {_name(flat[-1])})"
    else:
        also = f"; so do {len(flat) - 1} of the {len(later)} modules after it" \
            f" (down to {_name(flat[-1])})"
    cause = "the weights shrink the signal and the biases set a floor"
    if zero_weight(first.index, modules, parameters, layers):
        cause = "its weight is all zeros, so it outputs its bias"
        if first.grad_norm == 0:
            cause += ", and it gets no gradient: nothing will move it"
    elif _lacked_input(first, dep_limit):
        cause = "the input dependence is lost between modules, in the functional code that " \
            f"feeds {_name(first)}"
    if dead and dead[0].index < first.index:
        cause = f"the dead units upstream ({_name(dead[0])}) pass no signal on"
    samples = f"the {batch_size} samples" if batch_size else "the batch"
    return [CheckProblem(
        "input_dependence",
        tuple(layer.name for layer in flat),
        f"{_name(first)} ({first.type}): the output no longer depends on the input: its "
        f"spread across {samples} is {100 * (first.input_dependence or 0):.2g}% of its scale "
        f"(std {_number(first.output_std)}; expected: at least {100 * dep_limit:.2g}%){also}. "
        f"Every sample gets the same activations: {cause} -> "
        f"{_fix(first, layers, modules, parameters)}",
    )]


def _loss_problems(layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
                   thresholds: dict[str, float], loss: float | None, num_classes: int | None,
                   labels: bool) -> list[CheckProblem]:
    """Initial loss against ln(C); for a head tied to an embedding, advice on the embedding."""
    if loss is None or num_classes is None or num_classes < 2:
        return []
    expected = math.log(num_classes)
    ratio_limit, spread_limit = thresholds["max_loss_ratio"], thresholds["max_logit_std"]
    spread_loss = expected_cross_entropy(num_classes, spread_limit)
    if math.isfinite(loss) and loss <= max(ratio_limit * expected, spread_loss):
        return []
    head = _output_layer(layers, modules)
    last = head if head is not None else (layers[-1] if layers else None)
    logits = ""
    if last is not None and math.isfinite(last.output_std):
        logits = f"; the output layer {_name(last)} gives outputs of std " \
            f"{_number(last.output_std)}, whose expected cross-entropy is " \
            f"{_number(expected_cross_entropy(num_classes, last.output_std))}"
    what = "initial loss" if labels else \
        "initial cross-entropy of the logits (over their last dimension) against uniformly " \
        "drawn labels"
    weights_fix = "scale the last layer's weights down (std 0.01, or zeros)"
    fix = f"{weights_fix} and set its bias to zeros (or to the log class priors)"
    names: tuple[str, ...] = (last.name,) if last is not None else ()
    tied = tied_embedding(modules[head.index], layers, modules) if head is not None else None
    bias = _head_bias_std(modules[head.index]) if head is not None else None
    if bias is not None and bias > _PRIOR_BIAS_STD and head is not None:
        fix = (f"the bias of {_name(head)} (std {_number(bias)}) alone moves the predictions "
               "far from uniform: unless it holds the class prior on purpose, start it at the "
               "class prior (zeros: the uniform prior, the same as "
               "-ln(C) on every logit; b_c = ln(p_c) for class frequencies p_c; ln(p / (1 - p)) "
               f"for a sigmoid head, Lin et al. 2017), and {weights_fix}")
    if tied is not None and head is not None:
        names = (head.name, tied.name)
        fix = (f"{_name(head)} is tied to the embedding {_name(tied)} (one parameter), whose "
               f"scale sets the logits': {EMBEDDING_FIX}; do not rescale the head alone, that "
               f"rescales the embedding too (or scale the logits in forward)")
    return [CheckProblem(
        "loss",
        names,
        f"{what} {_number(loss)} is {loss / expected:.2g}x ln({num_classes}) = {expected:.3f}, "
        f"the cross-entropy of uniform predictions over {num_classes} classes (expected: at "
        f"most {ratio_limit:g}x, or {_number(spread_loss)}, the expected cross-entropy of "
        f"logits of std {spread_limit:g}){logits}: the model is confidently wrong at step 0 -> "
        f"{fix}",
    )]


def _output_layer(layers: Sequence[LayerRecord], modules: Sequence[nn.Module]
                  ) -> LayerRecord | None:
    """The last output layer by data flow (``LayerRecord.output_layer``), else the last weight
    layer called: a layer called after the head for another output is no head."""
    weighted = [layer for layer in layers if is_weight_layer(modules[layer.index])]
    return next((layer for layer in reversed(weighted) if layer.output_layer),
                weighted[-1] if weighted else None)


_PRIOR_BIAS_STD = 0.5  # a head bias spread wider than this moves the loss off ln(C) by itself


def _head_bias_std(module: nn.Module) -> float | None:
    """The std of a head's bias (``None``: no bias, or fewer than 2 values)."""
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor) or bias.numel() < 2 or bias.is_meta:
        return None
    return float(bias.detach().float().std())


EMBEDDING_FIX = "draw the embedding from N(0, 0.02) (BERT, GPT-2) or N(0, 1 / dim)"


def _confirmed(layer: LayerRecord, limit: float, high: bool) -> bool:
    """Whether the measured gain, output rms over input rms, agrees with the weight's (an input
    unlike a random one, such as one-hot rows, can make a large weight harmless)."""
    if not layer.inflow_rms or not math.isfinite(layer.inflow_rms):
        return True
    measured = math.hypot(layer.output_mean, layer.output_std) / layer.inflow_rms
    return measured > limit if high else measured < limit


def _gain_problems(layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
                   parameters: Sequence[ParameterRecord],
                   thresholds: dict[str, float]) -> list[CheckProblem]:
    """Weight layers that scale both a random input (forwards, fan_in) and a random gradient
    (backwards, fan_out) by more than ``max_layer_gain`` or less than ``min_layer_gain``, and
    whose output is not normalized right away (an output layer: more only). He et al. (2015)
    preserve one of the two; a layer that preserves neither was drawn at the wrong scale."""
    high, low = thresholds["max_layer_gain"], thresholds["min_layer_gain"]
    norms = {param.name: param.weight_norm for param in parameters}
    loud, quiet = [], []
    for layer, module in zip(layers, modules, strict=True):
        weight = norms.get(f"{layer.name}.weight" if layer.name else "weight")
        both = gains(module, weight) if weight else None
        if both is None or (low <= max(both) and min(both) <= high) \
                or not _confirmed(layer, high if min(both) > high else low, min(both) > high):
            continue
        if layer.normalized or (layer.output_layer and min(both) <= high):
            continue  # a norm removes its scale; a small head is a gate (see min_layer_gain)
        (loud if min(both) > high else quiet).append((layer, both))
    problems = []
    for found, verb, effect in (
            (loud, "multiplies", "activations and gradients blow up through it and what "
                                 "follows saturates"),
            (quiet, "shrinks", "its branch is inert and what it feeds learns slowly")):
        if not found:
            continue
        first, (forward, backward) = found[0]
        names = _listing([_name(layer) for layer, _ in found[1:]])
        others = f"; {len(found) - 1} more weight layers too ({names})" if len(found) > 1 else ""
        problems.append(CheckProblem(
            "gain",
            tuple(layer.name for layer, _ in found),
            f"{_name(first)} ({first.type}) {verb} the scale of a random input by about "
            f"{_number(forward)}x (std(W) * sqrt(fan_in)) and of a gradient backwards by about "
            f"{_number(backward)}x (std(W) * sqrt(fan_out)) (expected: one of the two between "
            f"{_number(low)}x and "
            f"{_number(high)}x; fan-in and fan-out inits give 1 to 5/3){others}: {effect} "
            f"-> {_fix(first, layers, modules, parameters)}",
        ))
    return problems


def _nonfinite_problem(
    bad: Sequence[LayerRecord], layers: Sequence[LayerRecord], input_nonfinite: int
) -> CheckProblem:
    if input_nonfinite:
        where = f"; the first module producing NaN/Inf is {_name(bad[0])} ({bad[0].type})" \
            if bad else ""
        return CheckProblem(
            "nonfinite",
            (bad[0].name,) if bad else (),
            f"the input batch contains {input_nonfinite} NaN/Inf value(s){where} -> clean the "
            f"data (torch.nan_to_num, or drop the samples) before looking at the init",
        )
    first = bad[0]
    size = math.prod(first.shape) if first.shape else 1
    return CheckProblem(
        "nonfinite",
        (first.name,),
        f"{_name(first)} ({first.type}) is the first module in forward order whose output has "
        f"NaN/Inf ({first.nonfinite} of {size} elements) while its inputs are finite "
        f"(expected: none) -> its weights (or the activations reaching it, std "
        f"{_number(layers[first.index - 1].output_std) if first.index else 'n/a'}) overflow; "
        f"use a smaller-variance init (fan_in-scaled) for it and the layers before it",
    )


def _gradient_problems(
    layers: Sequence[LayerRecord],
    modules: Sequence[nn.Module],
    parameters: Sequence[ParameterRecord],
    thresholds: dict[str, float],
    loss_is_surrogate: bool,
    unreachable: frozenset[str] = frozenset(),
) -> list[CheckProblem]:
    problems = []
    assumed = SURROGATE_ASSUMED if loss_is_surrogate else ""
    nonfinite = [p for p in parameters
                 if p.grad_norm is not None and not math.isfinite(p.grad_norm)]
    if nonfinite:
        problems.append(CheckProblem(
            "gradient",
            tuple(p.layer for p in nonfinite),
            f"{nonfinite[0].name}: gradient norm is {nonfinite[0].grad_norm}{assumed}; "
            f"{len(nonfinite)} parameter(s) in all (expected: finite) -> the backward pass "
            f"overflows; draw it at a fan-scaled std: "
            f"{_layer_fix(nonfinite[0].layer, layers, modules, parameters)}",
            cause="nonfinite",
        ))
        return problems
    zero = [p for p in zero_gradients(parameters) if p.name not in unreachable]
    if zero:
        problems.append(zero_gradient_problem(zero, assumed))
    problems.extend(_drift_problems(layers, modules, parameters, thresholds, assumed))
    return problems


ZERO_GRADIENT = "gets exactly zero gradient"
SURROGATE_ASSUMED = " with the surrogate loss (a random projection of the output)"


def zero_gradients(parameters: Sequence[ParameterRecord]) -> list[ParameterRecord]:
    """Parameters whose gradient is exactly zero (a zero bias with zero gradient is left out:
    nothing reads it yet, the layer it biases is judged instead)."""
    return [p for p in parameters if p.grad_norm == 0.0
            and (p.weight_norm > 0 or not p.name.rpartition(".")[2].startswith("bias"))]


def zero_gradient_problem(zero: Sequence[ParameterRecord], assumed: str = "") -> CheckProblem:
    """The ``gradient`` problem of parameters that get exactly zero gradient and could get
    one under another init (see :func:`verdicts`' ``unreachable``)."""
    stuck = [p.name for p in zero if p.weight_norm == 0]
    also = f"; {_listing(stuck)} {'is' if len(stuck) == 1 else 'are'} all zeros as well: " \
        f"stuck at zero, no step will move {'it' if len(stuck) == 1 else 'them'}" \
        if stuck else ""
    return CheckProblem(
        "gradient",
        tuple(dict.fromkeys(p.layer for p in zero)),
        f"{zero[0].name} {ZERO_GRADIENT}{assumed}; {len(zero)} parameter(s) in "
        f"all ({_listing([p.name for p in zero])}) (expected: nonzero){also} -> nothing "
        f"flows back through them: look for dead units, weights that are all zeros, or an "
        f"output that ignores them",
        cause="zero",
    )


def _drift_problems(layers: Sequence[LayerRecord], modules: Sequence[nn.Module],
                    parameters: Sequence[ParameterRecord], thresholds: dict[str, float],
                    assumed: str) -> list[CheckProblem]:
    """The gradient's trend over depth below the output layers
    (:func:`~lightning_init.check._depth.gradient_series`): an output layer's own grad/weight
    ratio is set by its own scale (a head of scale s: 1/s, while it multiplies every lower
    layer's gradient by s alike), which the loss and gain verdicts judge."""
    limit = thresholds["max_grad_drift"]
    worst: tuple[float, float, list[LayerRecord]] | None = None
    for series in gradient_series(layers):
        ratios = [layer.grad_to_weight or 0.0 for layer in series]
        factor, total = fit_factor(ratios), trend(ratios)
        if (total > limit or total < 1 / limit) and \
                (worst is None or abs(math.log(total)) > abs(math.log(worst[1]))):
            worst = (factor, total, series)
    if worst is None:
        return []
    factor, total, series = worst
    first, last = series[0], series[-1]
    kind, verb = ("vanish", "falls") if total > 1 else ("explode", "grows")
    return [CheckProblem(
        "gradient",
        (first.name, last.name),
        f"gradients {kind} towards the input: by a log-linear fit over {len(series)} weight "
        f"layers, the grad/weight norm ratio {verb} by about "
        f"{_number(total if total > 1 else 1 / total)}x from {_name(last)} back to {_name(first)}, "
        f"{_number(1 / factor)}x per layer (measured: {_number(last.grad_to_weight or 0)} at "
        f"{_name(last)}, {_number(first.grad_to_weight or 0)} at {_name(first)}){assumed}; "
        f"expected: within {_number(limit)}x over the net -> "
        f"{_fix(first, layers, modules, parameters)}",
        cause="drift",
    )]
