"""The check's run: one forward and backward pass measured, then judged.

:func:`check_pass` is the core shared by :func:`check_init` (a plain model) and
:func:`~lightning_init.check.lightning.check_lightning_module` (a LightningModule's
``training_step``): hooks on every module, the pass, gradients with ``torch.autograd.grad``
(by a restored backward under FSDP2), one host transfer for every number, the records and
the verdicts. The norms of sharded (DTensor) parameters and gradients are the full tensors'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_init._lightning import call_model
from lightning_init.anatomy import Anatomy, transforms
from lightning_init.check.classes import ClassificationLosses
from lightning_init.check.embeddings import embedding_problems, traced_pass
from lightning_init.check.findings import init_findings
from lightning_init.check.gates import GATED_KINDS, is_gate, settle, stepped
from lightning_init.check.ignore import apply_ignore, parse_ignore
from lightning_init.check.measure import (
    STAT_FIELDS,
    Recording,
    first_float_tensor,
    gradients,
    label_free_loss,
    loss_from_step_output,
    no_side_effects,
    norms,
    recording,
    surrogate_loss,
    tensors_in,
)
from lightning_init.check.options import CheckOptionError, resolve_thresholds, validate_num_classes
from lightning_init.check.records import CheckSubject, LayerRecord, ParameterRecord
from lightning_init.check.report import InitCheckReport
from lightning_init.check.roles import output_layers, with_depth_roles
from lightning_init.check.unread import unread_note, unread_parameters
from lightning_init.check.verdicts import verdicts, zero_gradients

__all__ = ["PassResult", "check_init", "check_pass"]

PassResult = tuple[torch.Tensor | None, str, Any]
"""What a pass returns: the loss (``None``: use the surrogate), its source, the output."""

_NumClassesFrom = Callable[[Any, list[tuple[int, ...]]], int | None]


def check_init(
    model: nn.Module,
    inputs: Any,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    target: Any = None,
    num_classes: int | None = None,
    ignore: str | list[str] | tuple[str, ...] = (),
    **thresholds: float,
) -> InitCheckReport:
    """Run ``model`` once on ``inputs``, measure every module and judge the initialization.

    The pass runs with dropout off and BatchNorm on batch statistics (every module in eval mode
    except the BatchNorm family), so that the spread across samples comes from the inputs.
    Nothing is changed: hooks are removed even when the forward raises; weights, buffers,
    ``.grad``, train/eval modes and RNG states are restored.

    Args:
        model: the model to check.
        inputs: a tensor (``model(inputs)``), a tuple/list (``model(*inputs)``) or a dict
            (``model(**inputs)``); the leading dimension of module outputs is taken as the batch.
        forward: ``forward(model, inputs) -> output`` to call the model another way.
        loss_fn: ``loss_fn(output, target)`` (``loss_fn(output)`` without target) gives the
            initial loss. Without it, the model's own scalar ``loss`` when its output is a
            mapping that holds one (transformers' models given ``labels``), else a surrogate
            loss (a fixed random projection of the output: a unit-variance backward signal)
            that gradient verdicts assume.
        target: the targets for ``loss_fn``.
        num_classes: turns on the initial-loss check against ln(C) (on by itself when the
            loss is a cross-entropy or NLL averaged over samples, ``loss_fn``'s or the
            model's own: C is its input's class dimension; see
            :mod:`lightning_init.check.classes`).
        ignore: globs over module names, or ``"kind:glob"``, of known findings to accept: a
            problem whose modules all match moves to ``report.ignored``.
        **thresholds: overrides of the defaults (``min_input_dependence=0.01``,
            ``max_scale_drift=100``, ``max_dead_fraction=0.9``, ``max_saturated_fraction=0.3``,
            ``max_grad_drift=1000``, ``max_loss_ratio=1.5``; see
            :mod:`lightning_init.check.verdicts`).

    Returns:
        An :class:`InitCheckReport`; ``report.ok`` is ``False`` when a problem was found.

    Raises:
        CheckOptionError: an unknown threshold (with a did-you-mean) or an invalid value.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> layers = []
        >>> for _ in range(30):
        ...     layers += [torch.nn.Linear(64, 64), torch.nn.ReLU()]
        >>> net = torch.nn.Sequential(*layers)
        >>> report = check_init(net, torch.randn(128, 64))  # PyTorch's default init
        >>> report.ok, report.problems[0].kind
        (False, 'input_dependence')
        >>> for module in net:
        ...     if isinstance(module, torch.nn.Linear):
        ...         _ = torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        ...         _ = torch.nn.init.zeros_(module.bias)
        >>> check_init(net, torch.randn(128, 64)).ok
        True
    """
    resolved = resolve_thresholds(thresholds, "check_init")
    num_classes = validate_num_classes(num_classes, "check_init")
    patterns = parse_ignore(ignore, "check_init", CheckOptionError)
    if target is not None and loss_fn is None:
        raise CheckOptionError("check_init: target= was given without loss_fn=")

    losses = ClassificationLosses()
    raised: list[str] = []  # why loss_fn could not run on a non-finite output

    def run() -> PassResult:
        with losses.recording():
            return _run()

    def _run() -> PassResult:
        output = forward(model, inputs) if forward is not None else call_model(model, inputs)
        if loss_fn is None:
            own = loss_from_step_output(output) if isinstance(output, Mapping) else None
            if own is not None and own.numel() == 1:  # transformers' output when given labels
                return own, "model_output", output
            return None, "surrogate", output
        loss = _user_loss(loss_fn, output, target, raised)
        if loss is None:
            return None, "surrogate", output
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else ""
            raise CheckOptionError(
                f"check_init: loss_fn must return a scalar tensor, got {type(loss).__name__}{shape}"
            )
        return loss, "loss_fn", output

    def classes_from_loss(_output: Any, _shapes: list[tuple[int, ...]]) -> int | None:
        return losses.classes

    report = check_pass(model, run, inputs, resolved, num_classes,
                        classes_from_loss if num_classes is None else None,
                        loss_term=lambda: losses.term)
    notes = [*report.notes, *dict.fromkeys(raised)]
    report = dataclasses.replace(report, notes=notes, _subject=CheckSubject(model, inputs, {
        "forward": forward, "loss_fn": loss_fn, "target": target,
        "num_classes": num_classes, "ignore": ignore, **thresholds}))
    return apply_ignore(report, patterns)


def _user_loss(loss_fn: Callable[..., Any], output: Any, target: Any,
               raised: list[str]) -> Any:
    """``loss_fn``'s loss; ``None`` (the surrogate's gradients then) when it raises on an output
    that holds NaN or Inf (``binary_cross_entropy`` refuses values outside [0, 1]): the
    non-finite outputs are then the check's finding, not a crash; why, in ``raised``."""
    try:
        return loss_fn(output) if target is None else loss_fn(output, target)
    except Exception as err:
        tensors = [t.detach() for t in tensors_in(output) if t.is_floating_point()]
        if not tensors or all(bool(torch.isfinite(t).all()) for t in tensors):
            raise
        raised.append(f"loss_fn raised {type(err).__name__} ({str(err).splitlines()[0][:120]}) "
                      f"on an output that holds NaN or Inf: gradients are those of a surrogate "
                      f"loss of the output, and the initial loss is not tested")
        return None


def check_pass(
    model: nn.Module,
    run: Callable[[], PassResult],
    inputs: Any,
    thresholds: Mapping[str, float],
    num_classes: int | None,
    num_classes_from: _NumClassesFrom | None = None,
    look_ahead: bool = True,
    unread: frozenset[str] | None = None,
    loss_term: Callable[[], float | None] | None = None,
) -> InitCheckReport:
    """Measure the pass ``run`` makes through ``model`` and judge it; when deliberate zero
    gates exist and findings they could explain were made, a second pass with the gates
    stepped (see :mod:`lightning_init.check.gates`).

    Args:
        model: the model whose modules are hooked and whose parameters get gradients.
        run: makes the pass; returns the loss (``None``: the surrogate loss of the output),
            where the loss came from and the output.
        inputs: the inputs, searched for NaN/Inf.
        thresholds: every threshold, by name.
        num_classes: C for the initial-loss check, or ``None``.
        num_classes_from: ``(output, output shapes) -> C or None`` when ``num_classes`` is
            ``None``.
        look_ahead: whether the second pass may run.
        unread: the parameters whose exact zero gradient no init changes, when known (the
            look-ahead pass is given its first pass's); else measured here (see
            :mod:`lightning_init.check.unread`).
        loss_term: ``() -> value`` of the pass's one classification loss (see
            :attr:`~lightning_init.check.classes.ClassificationLosses.term`): when the loss
            adds other terms to it, the initial-loss test reads this term alone.

    Returns:
        The :class:`InitCheckReport`.

    Example:
        >>> import torch
        >>> from lightning_init.check.verdicts import DEFAULT_THRESHOLDS
        >>> net = torch.nn.Linear(4, 3)
        >>> x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        >>> def run():
        ...     output = net(x)
        ...     return torch.nn.functional.cross_entropy(output, y), "loss_fn", output
        >>> report = check_pass(net, run, x, DEFAULT_THRESHOLDS, num_classes=3)
        >>> report.loss_source, round(report.expected_loss, 3), len(report.parameters)
        ('loss_fn', 1.099, 2)
    """
    notes: list[str] = []
    # Before the forward: FSDP2 swaps a root module's sharded parameters for gathered copies
    # until its backward.
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    with no_side_effects(model), recording(model) as record:
        # The first pass is the anatomy's too where the embedding verdict needs it.
        anatomy, (loss, loss_source, output) = traced_pass(model, inputs, run) if look_ahead \
            else (None, run())
        if loss is None:
            output_tensor = first_float_tensor(output)
            if output_tensor is None:
                raise ValueError("check_init: the model's output holds no floating-point tensor")
            loss, loss_source = surrogate_loss(output_tensor), "surrogate"
            notes.append("no loss given: gradients are those of a surrogate loss, a fixed random "
                         "projection of the output (unit backward signal); gradient verdicts "
                         "assume it")
        grads = _gradients(model, loss, [param for _, param in named], notes)
        if num_classes is None and num_classes_from is not None:
            num_classes = num_classes_from(output, record.shapes)
        free = label_free_loss(output)
        term = loss_term() if loss_term is not None else None
        numbers = _to_host(record, named, grads, inputs, loss, free)
        produced = record.producers(output)
    parameters = _parameter_records(model, named, grads, numbers)
    layers = _layer_records(record, numbers.layer_rows, parameters)
    layers = with_depth_roles(layers, record.modules, _heads(anatomy, produced, layers))
    notes.extend(init_findings(model, layers))
    batch_size = next((shape[0] for shape in record.shapes if len(shape) >= 1), None)
    surrogate = loss_source == "surrogate"
    use_loss_check = not surrogate and num_classes is not None
    check_loss, check_classes = _loss_to_check(numbers, num_classes, free, use_loss_check, notes,
                                               term)
    if unread is None:
        unread = _unread(model, run, named, parameters, notes)
    problems = verdicts(
        layers, record.modules, parameters, dict(thresholds),
        input_nonfinite=numbers.input_nonfinite, batch_size=batch_size,
        loss=check_loss, num_classes=check_classes,
        loss_is_surrogate=surrogate, labels=use_loss_check, unreachable=unread,
    )
    if not any(problem.kind == "nonfinite" for problem in problems):
        # A head tied to the embedding: the loss verdict already says what to do with it.
        said = {name for problem in problems if problem.kind == "loss" for name in problem.layers}
        problems += [problem for problem in embedding_problems(anatomy, dict(thresholds))
                     if problem.layers[0] not in said]
    if not layers:
        notes.append("no module produced a floating-point output: nothing measured")
    report = InitCheckReport(
        problems=problems, layers=layers, parameters=parameters,
        loss=None if surrogate else numbers.loss,
        loss_source=None if surrogate else loss_source,
        expected_loss=math.log(num_classes) if use_loss_check and num_classes else None,
        num_classes=num_classes if use_loss_check else None,
        notes=notes,
    )
    gates = [(record_.name, param, grad) for (_, param), record_, grad
             in zip(named, parameters, grads, strict=True) if is_gate(record_)]
    if look_ahead and gates and any(p.kind in GATED_KINDS for p in problems):
        with stepped([(param, grad) for _, param, grad in gates]):
            ahead = check_pass(model, run, inputs, thresholds, num_classes, num_classes_from,
                               look_ahead=False, unread=unread, loss_term=loss_term)
        report = settle(report, ahead, [name for name, _, _ in gates],
                        thresholds["min_input_dependence"], unread)
    return report


def _heads(anatomy: Anatomy | None, produced: Sequence[int], layers: Sequence[LayerRecord]
           ) -> list[str] | None:
    """The output layers by data flow: the anatomy's heads where the pass was traced, else the
    weight layers behind the modules whose output the model returned (``None``: the output was
    computed outside every module: the last weight layer is taken)."""
    if anatomy is not None and anatomy.heads:
        return anatomy.head_names()
    return output_layers(produced, layers) if produced else None


def _unread(model: nn.Module, run: Callable[[], PassResult],
            named: Sequence[tuple[str, torch.Tensor]], parameters: Sequence[ParameterRecord],
            notes: list[str]) -> frozenset[str]:
    """The parameters with exactly zero gradient that no init changes (a second pass with
    every parameter moved; see :mod:`lightning_init.check.unread`), noted."""
    candidates = [record.name for record in zero_gradients(parameters)]
    if not candidates:
        return frozenset()
    try:
        found = unread_parameters(model, run, named, candidates)
    except Exception as error:  # moved weights may break the model's own checks
        notes.append(f"whether an init changes the exact zero gradients could not be tested: "
                     f"the pass with every parameter moved failed "
                     f"({type(error).__name__}: {_first_line(error)}); they stay findings")
        return frozenset()
    if found:
        notes.append(unread_note(found))
    return frozenset(found)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else "no message"


def _loss_to_check(
    numbers: _HostNumbers, num_classes: int | None, free: tuple[torch.Tensor, int] | None,
    use_loss_check: bool, notes: list[str], term: float | None = None,
) -> tuple[float | None, int | None]:
    """The initial loss the verdicts judge and its C: the real loss against its labels (its
    classification term ``term`` alone when the loss adds others to it), else the logits'
    cross-entropy against uniformly drawn labels (C from their last dimension)."""
    if use_loss_check:
        if term is not None and math.isfinite(term) \
                and abs(term - numbers.loss) > 1e-4 * max(1.0, abs(numbers.loss)):
            notes.append(f"initial-loss test on the cross-entropy term alone: {term:.4g} of a "
                         f"loss of {numbers.loss:.4g} that adds other terms to it")
            return term, num_classes
        return numbers.loss, num_classes
    if free is None:
        return None, None
    notes.append(f"initial-loss test on the logits: their cross-entropy against uniformly "
                 f"drawn labels is {numbers.free_loss:.4g} (ln({free[1]}) = "
                 f"{math.log(free[1]):.4g} for uniform predictions)")
    return numbers.free_loss, free[1]


def _gradients(
    model: nn.Module, loss: torch.Tensor, params: list[torch.Tensor], notes: list[str]
) -> list[torch.Tensor | None]:
    """``d loss / d param`` for each (``None`` where unused); why none, in ``notes``."""
    if params and loss.requires_grad:
        return gradients(model, loss, params)
    if not params:
        notes.append("no trainable parameters: no gradient measured")
    else:
        notes.append("the loss does not depend on any trainable parameter (computed without "
                     "autograd?): no gradient measured")
    return [None] * len(params)


@dataclass(frozen=True)
class _HostNumbers:
    """Everything the pass measured, on the host."""

    layer_rows: list[list[float]]  # one row of STAT_FIELDS per recorded module
    weight_norms: list[float]  # one per trainable parameter
    grad_norms: list[float]  # one per parameter that got a gradient, in order
    input_nonfinite: int
    loss: float
    free_loss: float  # the logits' cross-entropy against uniform labels (0 when not measured)


def _to_host(
    record: Recording,
    named: Sequence[tuple[str, torch.Tensor]],
    grads: Sequence[torch.Tensor | None],
    inputs: Any,
    loss: torch.Tensor,
    free: tuple[torch.Tensor, int] | None,
) -> _HostNumbers:
    """One host transfer for everything measured."""
    device = loss.device
    layer_stats = (torch.stack([s.to(device) for s in record.stats]) if record.stats
                   else torch.zeros((0, len(STAT_FIELDS)), device=device))
    # Collective for DTensors (full tensors' norms): every rank, same lists.
    weight_norms = [n.to(device) for n in norms([p for _, p in named])]
    grad_norms = [n.to(device) for n in norms([g for g in grads if g is not None])]
    input_nonfinite = [(~torch.isfinite(t.detach())).sum().float().to(device)
                       for t in tensors_in(inputs) if t.is_floating_point()]
    flat = torch.cat([
        layer_stats.reshape(-1),
        torch.stack(weight_norms) if weight_norms else layer_stats.new_zeros(0),
        torch.stack(grad_norms) if grad_norms else layer_stats.new_zeros(0),
        torch.stack(input_nonfinite).sum().reshape(1) if input_nonfinite
        else layer_stats.new_zeros(1),
        loss.detach().float().reshape(1).to(device),
        (free[0] if free else loss.new_zeros(())).detach().float().reshape(1).to(device),
    ]).tolist()
    width, count = len(STAT_FIELDS), len(record.names)
    position = count * width
    weights_end = position + len(named)
    grads_end = weights_end + len(grad_norms)
    return _HostNumbers(
        layer_rows=[flat[i * width:(i + 1) * width] for i in range(count)],
        weight_norms=flat[position:weights_end],
        grad_norms=flat[weights_end:grads_end],
        input_nonfinite=int(flat[grads_end]),
        loss=flat[grads_end + 1],
        free_loss=flat[grads_end + 2],
    )


def _parameter_records(
    model: nn.Module,
    named: Sequence[tuple[str, torch.Tensor]],
    grads: Sequence[torch.Tensor | None],
    numbers: _HostNumbers,
) -> list[ParameterRecord]:
    owner = {id(param): module_name for module_name, module in model.named_modules()
             for param in module.parameters(recurse=False)}
    grad_norms = iter(numbers.grad_norms)
    return [
        ParameterRecord(name=name, layer=owner.get(id(param), ""), weight_norm=weight,
                        grad_norm=next(grad_norms) if grad is not None else None)
        for (name, param), weight, grad in zip(named, numbers.weight_norms, grads, strict=True)
    ]


def _layer_records(
    record: Recording, rows: list[list[float]], parameters: list[ParameterRecord]
) -> list[LayerRecord]:
    per_layer: dict[str, list[ParameterRecord]] = {}
    for param in parameters:
        per_layer.setdefault(param.layer, []).append(param)
    layers = []
    for index, (name, module, shape, row) in enumerate(
            zip(record.names, record.modules, record.shapes, rows, strict=True)):
        own = per_layer.get(name, [])
        with_grad = [p for p in own if p.grad_norm is not None]
        layers.append(LayerRecord(
            index=index, name=name, type=type(module).__name__, shape=shape,
            output_mean=row[0], output_std=row[1], input_dependence=_nan_none(row[2]),
            dead_fraction=_nan_none(row[3]), saturated_fraction=_nan_none(row[4]),
            nonfinite=int(row[5]), inflow_dependence=_nan_none(row[6]),
            inflow_rms=_nan_none(row[7]), source=record.sources[index],
            grad_norm=math.sqrt(sum((p.grad_norm or 0.0) ** 2 for p in with_grad))
            if with_grad else None,
            weight_norm=math.sqrt(sum(p.weight_norm**2 for p in own)) if own else None,
            transforms=transforms(module),
        ))
    return layers


def _nan_none(value: float) -> float | None:
    return None if math.isnan(value) else value
