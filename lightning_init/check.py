"""The init check: one forward and backward pass that tells a good init from a bad one.

:func:`check_init` runs the model once on a sample batch with forward hooks on every module,
measures each output (mean, std, input dependence, dead units, saturation, NaN/Inf) and each
parameter's gradient, and turns the numbers into verdicts naming the layer, the number, the
expectation and a likely fix. :func:`lsuv_init` is the data-dependent LSUV init (Mishkin & Matas
2015). :func:`check_lightning_module` and :func:`publish_check_report` are the Lightning glue
used by ``InitCallback``.

The check leaves no trace: hooks are removed even when the forward raises; weights, buffers
(BatchNorm running statistics), ``.grad``, every module's train/eval mode and the RNG states are
as before. Gradients come from ``torch.autograd.grad``, never ``.backward()``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lightning_init._check_measure import (
    STAT_FIELDS,
    call_model,
    first_float_tensor,
    gradients,
    loss_from_step_output,
    no_side_effects,
    norms,
    recording,
    surrogate_loss,
    tensors_in,
)
from lightning_init._check_report import (
    CheckProblem,
    InitCheckReport,
    LayerRecord,
    ParameterRecord,
)
from lightning_init._check_verdicts import DEFAULT_THRESHOLDS, verdicts
from lightning_init._text import did_you_mean, format_choices
from lightning_init.errors import InitCheckError, OptionError

__all__ = [
    "CheckOptionError",
    "CheckOptions",
    "CheckProblem",
    "InitCheckError",
    "InitCheckReport",
    "LSUVReport",
    "LayerRecord",
    "ParameterRecord",
    "check_init",
    "check_lightning_module",
    "lsuv_init",
    "publish_check_report",
    "raise_or_warn",
]


class CheckOptionError(OptionError):
    """An unknown or invalid option of the init check (``check={...}`` or a keyword).

    Example:
        >>> CheckOptions.from_arg({"on_fial": "raise"})
        Traceback (most recent call last):
        ...
        lightning_init.check.CheckOptionError: check: unknown option 'on_fial'. Did you mean ...
    """


_ON_FAIL = ("warn", "raise")


def _thresholds(overrides: Mapping[str, Any], where: str) -> dict[str, float]:
    resolved = dict(DEFAULT_THRESHOLDS)
    for key, value in overrides.items():
        if key not in DEFAULT_THRESHOLDS:
            raise CheckOptionError(
                f"{where}: unknown threshold {key!r}.{did_you_mean(str(key), DEFAULT_THRESHOLDS)}"
                f" Valid thresholds: {format_choices(DEFAULT_THRESHOLDS)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or not math.isfinite(value):
            raise CheckOptionError(
                f"{where}: threshold {key!r} must be a positive number, got {value!r}"
            )
        resolved[key] = float(value)
    return resolved


def _num_classes(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise CheckOptionError(f"{where}: 'num_classes' must be an integer >= 2, got {value!r}")
    return value


@dataclass(frozen=True)
class CheckOptions:
    """Options of the init check as given to ``InitCallback(check=...)``.

    Attributes:
        on_fail: ``"warn"`` (default: a warning listing the problems) or ``"raise"``
            (:class:`~lightning_init.InitCheckError` before the first training step).
        thresholds: every threshold, defaults filled in (see :data:`DEFAULT_THRESHOLDS`).
        num_classes: the number of classes for the initial-loss check, when the heuristic
            (output with C columns, integer targets below C in the batch) cannot tell.

    Example:
        >>> options = CheckOptions.from_arg({"on_fail": "raise", "max_dead_fraction": 0.3})
        >>> options.on_fail, options.thresholds["max_dead_fraction"]
        ('raise', 0.3)
        >>> CheckOptions.from_arg(False) is None
        True
    """

    on_fail: str = "warn"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    num_classes: int | None = None

    @classmethod
    def from_arg(cls, arg: bool | Mapping[str, Any] | CheckOptions | None) -> CheckOptions | None:
        """``True`` -> defaults; ``False``/``None`` -> ``None`` (check off); a mapping of
        ``on_fail``, ``num_classes`` and thresholds (top level or under ``thresholds``).

        Raises:
            CheckOptionError: unknown key (with a did-you-mean), invalid value or type.
        """
        if arg is None or arg is False:
            return None
        if arg is True:
            return cls()
        if isinstance(arg, CheckOptions):
            return arg
        if not isinstance(arg, Mapping):
            raise CheckOptionError(
                f"check: expected True, False or a mapping of options, got {arg!r}"
            )
        own_keys = ("on_fail", "num_classes", "thresholds")
        valid = (*own_keys, *DEFAULT_THRESHOLDS)
        for key in arg:
            if key not in valid:
                raise CheckOptionError(
                    f"check: unknown option {key!r}.{did_you_mean(str(key), valid)} "
                    f"Valid options: {format_choices(valid)}"
                )
        on_fail = arg.get("on_fail", "warn")
        if on_fail not in _ON_FAIL:
            raise CheckOptionError(
                f"check: 'on_fail' must be one of {format_choices(_ON_FAIL)}, got {on_fail!r}."
                f"{did_you_mean(str(on_fail), _ON_FAIL)}"
            )
        nested = arg.get("thresholds") or {}
        if not isinstance(nested, Mapping):
            raise CheckOptionError(f"check: 'thresholds' must be a mapping, got {nested!r}")
        overrides = {**nested, **{k: v for k, v in arg.items() if k in DEFAULT_THRESHOLDS}}
        return cls(
            on_fail=on_fail,
            thresholds=_thresholds(overrides, "check"),
            num_classes=_num_classes(arg.get("num_classes"), "check"),
        )


def _is_cross_entropy(loss_fn: Any) -> bool:
    return isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or loss_fn in (
        F.cross_entropy, F.nll_loss)


def _measure(
    model: nn.Module,
    run: Callable[[], tuple[torch.Tensor | None, str, Any]],
    inputs: Any,
    thresholds: Mapping[str, float],
    num_classes: int | None,
    num_classes_from: Callable[[Any, list[tuple[int, ...]]], int | None] | None = None,
) -> InitCheckReport:
    """The shared core: hooks, one pass (``run`` returns loss, its source and the output),
    gradients with ``autograd.grad``, one host transfer, verdicts."""
    notes: list[str] = []
    # Before the forward: FSDP2 swaps a root module's sharded parameters for gathered copies
    # until its backward.
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    with no_side_effects(model), recording(model) as record:
        loss, loss_source, output = run()
        if loss is None:
            output_tensor = first_float_tensor(output)
            if output_tensor is None:
                raise ValueError("check_init: the model's output holds no floating-point tensor")
            loss, loss_source = surrogate_loss(output_tensor), "surrogate"
            notes.append("no loss given: gradients are those of a surrogate loss, a fixed random "
                         "projection of the output (unit backward signal); gradient verdicts "
                         "assume it")
        grads: list[torch.Tensor | None] = [None] * len(named)
        if named and loss.requires_grad:
            grads = gradients(model, loss, [p for _, p in named])
        elif not named:
            notes.append("no trainable parameters: no gradient measured")
        else:
            notes.append("the loss does not depend on any trainable parameter (computed without "
                         "autograd?): no gradient measured")
        if num_classes is None and num_classes_from is not None:
            num_classes = num_classes_from(output, record.shapes)
        # One host transfer for everything measured.
        device = loss.device
        layer_stats = (torch.stack([s.to(device) for s in record.stats]) if record.stats
                       else torch.zeros((0, len(STAT_FIELDS)), device=device))
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
        ]).tolist()
    width = len(STAT_FIELDS)
    count = len(record.names)
    rows = [flat[i * width:(i + 1) * width] for i in range(count)]
    position = count * width
    weight_values = flat[position:position + len(named)]
    position += len(named)
    grad_iter = iter(flat[position:position + len(grad_norms)])
    position += len(grad_norms)
    input_bad, loss_value = int(flat[position]), flat[position + 1]

    owner = {id(param): module_name for module_name, module in model.named_modules()
             for param in module.parameters(recurse=False)}
    parameters = [
        ParameterRecord(name=name, layer=owner.get(id(param), ""), weight_norm=weight,
                        grad_norm=next(grad_iter) if grad is not None else None)
        for (name, param), weight, grad in zip(named, weight_values, grads, strict=True)
    ]
    per_layer: dict[str, list[ParameterRecord]] = {}
    for param in parameters:
        per_layer.setdefault(param.layer, []).append(param)

    def _nan_none(value: float) -> float | None:
        return None if math.isnan(value) else value

    layers = []
    for index, (name, module, shape, row) in enumerate(
            zip(record.names, record.modules, record.shapes, rows, strict=True)):
        own = per_layer.get(name, [])
        with_grad = [p for p in own if p.grad_norm is not None]
        layers.append(LayerRecord(
            index=index, name=name, type=type(module).__name__, shape=shape,
            output_mean=row[0], output_std=row[1], input_dependence=_nan_none(row[2]),
            dead_fraction=_nan_none(row[3]), saturated_fraction=_nan_none(row[4]),
            nonfinite=int(row[5]),
            grad_norm=math.sqrt(sum((p.grad_norm or 0.0) ** 2 for p in with_grad))
            if with_grad else None,
            weight_norm=math.sqrt(sum(p.weight_norm**2 for p in own)) if own else None,
        ))
    batch_size = next((shape[0] for shape in record.shapes if len(shape) >= 1), None)
    use_loss_check = loss_source != "surrogate" and num_classes is not None
    problems = verdicts(
        layers, record.modules, parameters, dict(thresholds),
        input_nonfinite=input_bad, batch_size=batch_size,
        loss=loss_value if use_loss_check else None,
        num_classes=num_classes if use_loss_check else None,
        loss_is_surrogate=loss_source == "surrogate",
    )
    if not layers:
        notes.append("no module produced a floating-point output: nothing measured")
    return InitCheckReport(
        problems=problems, layers=layers, parameters=parameters,
        loss=loss_value if loss_source != "surrogate" else None,
        loss_source=loss_source if loss_source != "surrogate" else None,
        expected_loss=math.log(num_classes) if use_loss_check and num_classes else None,
        num_classes=num_classes if use_loss_check else None,
        notes=notes,
    )


def check_init(
    model: nn.Module,
    inputs: Any,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    target: Any = None,
    num_classes: int | None = None,
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
            initial loss. Without it gradients come from a surrogate loss (a fixed random
            projection of the output: a unit-variance backward signal) and gradient verdicts
            assume it.
        target: the targets for ``loss_fn``.
        num_classes: turns on the initial-loss check against ln(C) (on by itself for
            ``nn.CrossEntropyLoss`` / ``F.cross_entropy`` / NLL, with C = output.shape[1]).
        **thresholds: overrides of the defaults (``min_input_dependence=0.01``,
            ``max_scale_drift=100``, ``max_dead_fraction=0.5``, ``max_saturated_fraction=0.3``,
            ``max_grad_drift=1000``, ``max_loss_ratio=1.5``).

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
    resolved = _thresholds(thresholds, "check_init")
    num_classes = _num_classes(num_classes, "check_init")
    if target is not None and loss_fn is None:
        raise CheckOptionError("check_init: target= was given without loss_fn=")
    if loss_fn is not None and num_classes is None and _is_cross_entropy(loss_fn):
        num_classes = -1  # resolved from the output's shape below

    def run() -> tuple[torch.Tensor | None, str, Any]:
        output = forward(model, inputs) if forward is not None else call_model(model, inputs)
        if loss_fn is None:
            return None, "surrogate", output
        loss = loss_fn(output) if target is None else loss_fn(output, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else ""
            raise CheckOptionError(
                f"check_init: loss_fn must return a scalar tensor, got {type(loss).__name__}{shape}"
            )
        return loss, "loss_fn", output

    classes_from_output = None
    if num_classes == -1:
        num_classes = None

        def classes_from_output(output: Any, _shapes: list[tuple[int, ...]]) -> int | None:
            tensor = first_float_tensor(output)
            return int(tensor.shape[1]) if tensor is not None and tensor.dim() >= 2 else None

    return _measure(model, run, inputs, resolved, num_classes, classes_from_output)


# ---------------------------------------------------------------------------------------- LSUV


@dataclass(frozen=True)
class LSUVLayer:
    """One layer of :func:`lsuv_init`: how many rescaling passes it took and the result.

    Attributes:
        name: the module's qualified name.
        iterations: forward passes spent rescaling it (0: already within tolerance).
        variance: the output variance after the last rescale.
        converged: ``abs(variance - 1) <= tol``.
    """

    name: str
    iterations: int
    variance: float
    converged: bool


@dataclass
class LSUVReport:
    """The result of :func:`lsuv_init`: one :class:`LSUVLayer` per rescaled layer.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> report = lsuv_init(net, torch.randn(64, 8))
        >>> [layer.name for layer in report.layers], report.converged
        (['0', '2'], True)
    """

    layers: list[LSUVLayer]
    tol: float

    @property
    def converged(self) -> bool:
        """``True`` when every layer reached unit variance within ``tol``."""
        return all(layer.converged for layer in self.layers)

    @property
    def iterations(self) -> dict[str, int]:
        """Iterations per layer, by qualified name."""
        return {layer.name: layer.iterations for layer in self.layers}

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer'.ljust(width)}  iterations  variance  converged"]
        lines += [f"{layer.name.ljust(width)}  {layer.iterations:>10}  {layer.variance:>8.4f}  "
                  f"{'yes' if layer.converged else 'NO'}" for layer in self.layers]
        return "\n".join(lines)


class _StopForward(Exception):
    """Raised by LSUV's hook once the layer of interest has produced its output."""


_LSUV_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def lsuv_init(
    model: nn.Module,
    inputs: Any,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    orthogonal: bool = True,
) -> LSUVReport:
    """Layer-sequential unit-variance init (Mishkin & Matas 2015, "All you need is a good init").

    Pre-initializes every ``Linear``/``Conv`` weight orthogonally (``orthogonal=True``), then,
    layer by layer in forward order, runs the batch and divides the layer's weight by the
    standard deviation of its output until the output variance is within ``tol`` of 1, at most
    ``max_iters`` passes per layer. Changes those weights in place under ``no_grad`` (by design)
    and nothing else: biases, buffers, train/eval modes stay as they were; passes run like the
    check's (dropout off, BatchNorm on batch statistics). The orthogonal pre-init draws from
    the global RNG (seed it for reproducibility).

    Args:
        model: the model to initialize.
        inputs: a tensor, tuple or dict, fed like :func:`check_init` does.
        tol: tolerance on the output variance (``|var - 1| <= tol``).
        max_iters: the most rescaling passes per layer.
        forward: ``forward(model, inputs)`` to call the model another way.
        orthogonal: whether to pre-initialize with ``torch.nn.init.orthogonal_``.

    Returns:
        An :class:`LSUVReport` with the iterations and final variance per layer.

    Raises:
        ValueError: ``tol`` not positive or ``max_iters`` below 1.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(5)])
        >>> report = lsuv_init(net, torch.randn(256, 32), tol=0.01)
        >>> all(abs(layer.variance - 1) <= 0.01 for layer in report.layers)
        True
    """
    if not tol > 0:
        raise ValueError(f"lsuv_init: tol must be positive, got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"lsuv_init: max_iters must be an integer >= 1, got {max_iters!r}")
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, _LSUV_TYPES) and module.weight is not None]
    if orthogonal:
        with torch.no_grad():
            for _, module in candidates:
                nn.init.orthogonal_(module.weight)

    def variance_of(target: nn.Module) -> float | None:
        seen: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = first_float_tensor(output)
            if tensor is not None:
                seen.append(tensor.detach().float().var(correction=0))
            raise _StopForward

        handle = target.register_forward_hook(hook)
        try:
            with torch.no_grad(), no_side_effects(model), torch.no_grad():
                (forward or call_model)(model, inputs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return float(seen[0]) if seen else None  # one host sync per pass

    layers = []
    for name, module in candidates:
        iterations = 0
        variance = variance_of(module)
        if variance is None:  # never called in the forward
            continue
        while abs(variance - 1) > tol and iterations < max_iters and variance > 0:
            with torch.no_grad():
                module.weight.div_(math.sqrt(variance))
            iterations += 1
            variance = variance_of(module)
            if variance is None:  # pragma: no cover - a forward that skips it on a re-run
                break
        if variance is None:  # pragma: no cover
            continue
        layers.append(LSUVLayer(name, iterations, variance, abs(variance - 1) <= tol))
    return LSUVReport(layers=layers, tol=tol)


# ------------------------------------------------------------------------------ Lightning glue


def check_lightning_module(pl_module: Any, batch: Any, options: CheckOptions) -> InitCheckReport:
    """Check a ``LightningModule`` the way it is fed.

    With a ``batch`` (the first batch of the training dataloader), runs
    ``pl_module.training_step(batch, 0)`` with ``self.log``/``self.log_dict`` muted, under the
    trainer's precision context when attached; its return (a tensor, or a dict's ``"loss"``)
    is the initial loss. With ``batch=None``, calls ``pl_module(example_input_array)`` (tuple
    unpacked, dict as keywords, like Lightning's model summary) and gradients assume the
    surrogate loss. Manual optimization (``automatic_optimization=False``) would step the
    optimizers inside ``training_step``: then the forward uses ``example_input_array`` if set,
    else the first element of the batch.

    The initial-loss check uses ``options.num_classes``, or when the model's last output is
    ``(N, C)`` and the batch holds integer targets of shape ``(N,)`` in ``[0, C)``, C.

    Args:
        pl_module: the (inner, unwrapped) LightningModule.
        batch: the sample batch (moved to ``pl_module.device`` if it is elsewhere), or
            ``None``.
        options: the check's options.

    Returns:
        The :class:`InitCheckReport`.

    Raises:
        ValueError: no batch and no ``example_input_array``.

    Example:
        >>> import torch, lightning
        >>> class Classifier(lightning.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
        ...                                        torch.nn.Linear(16, 4))
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         loss = torch.nn.functional.cross_entropy(self.net(x), y)
        ...         self.log("train_loss", loss)
        ...         return loss
        >>> batch = (torch.randn(32, 8), torch.randint(0, 4, (32,)))
        >>> report = check_lightning_module(Classifier(), batch, CheckOptions())
        >>> report.ok, report.loss_source, report.num_classes
        (True, 'training_step', 4)
    """
    example = getattr(pl_module, "example_input_array", None)
    manual = not getattr(pl_module, "automatic_optimization", True)
    if batch is None or manual:
        inputs = example
        if inputs is None and batch is not None:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        if inputs is None:
            raise ValueError(
                f"check: {type(pl_module).__name__} has no example_input_array and no sample "
                f"batch was given; set `self.example_input_array` or pass a batch"
            )
        inputs = _to_device(inputs, pl_module)
        report = check_init(pl_module, inputs, num_classes=None, **options.thresholds)
        if manual:
            report.notes.append("manual optimization: training_step not run (it would step the "
                                "optimizers); the forward was measured")
        return report

    batch = _to_device(batch, pl_module)

    def run() -> tuple[torch.Tensor | None, str, Any]:
        with _muted_logging(pl_module), _step_context(pl_module):
            step_output = pl_module.training_step(batch, 0)
        loss = loss_from_step_output(step_output)
        if loss is None:
            if first_float_tensor(step_output) is None:
                raise ValueError(
                    f"check: {type(pl_module).__name__}.training_step returned "
                    f"{type(step_output).__name__}, not a loss tensor or a dict with 'loss'; "
                    f"set `self.example_input_array` to check the forward instead"
                )
            return None, "surrogate", step_output
        return loss, "training_step", loss

    def classes_from_batch(_output: Any, shapes: list[tuple[int, ...]]) -> int | None:
        return _guess_num_classes(batch, shapes)

    if options.num_classes is not None:
        return _measure(pl_module, run, batch, options.thresholds, options.num_classes)
    return _measure(pl_module, run, batch, options.thresholds, None, classes_from_batch)


def _guess_num_classes(batch: Any, shapes: list[tuple[int, ...]]) -> int | None:
    """C when the last 2-D output is ``(N, C)`` and the batch has integer targets in [0, C)."""
    last = next((shape for shape in reversed(shapes) if len(shape) == 2), None)
    if last is None or last[1] < 2:
        return None
    rows, classes = last
    for tensor in tensors_in(batch):
        if tensor.dim() == 1 and tensor.shape[0] == rows and not tensor.is_floating_point() \
                and tensor.dtype != torch.bool and not tensor.is_complex():
            low, high = torch.stack([tensor.min(), tensor.max()]).tolist()
            if low >= 0 and high < classes:
                return classes
    return None


class _muted_logging:
    """Replace ``self.log``/``self.log_dict`` on the instance by no-ops; restore on exit."""

    def __init__(self, pl_module: Any) -> None:
        self.pl_module = pl_module
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        instance_dict = vars(self.pl_module)
        for attribute in ("log", "log_dict"):
            if attribute in instance_dict:
                self.saved[attribute] = instance_dict[attribute]
            object.__setattr__(self.pl_module, attribute, _no_op)

    def __exit__(self, *exc_info: Any) -> None:
        instance_dict = vars(self.pl_module)
        for attribute in ("log", "log_dict"):
            if attribute in self.saved:
                object.__setattr__(self.pl_module, attribute, self.saved[attribute])
            else:
                instance_dict.pop(attribute, None)


def _no_op(*_args: Any, **_kwargs: Any) -> None:
    return None


def _step_context(pl_module: Any) -> Any:
    import contextlib

    trainer = getattr(pl_module, "_trainer", None)
    plugin = getattr(trainer, "precision_plugin", None)
    if plugin is not None and hasattr(plugin, "train_step_context"):
        return plugin.train_step_context()
    return contextlib.nullcontext()


def _to_device(inputs: Any, pl_module: Any) -> Any:
    device = getattr(pl_module, "device", None)
    if device is None:
        return inputs
    from lightning.pytorch.utilities import move_data_to_device

    return move_data_to_device(inputs, device)


def publish_check_report(report: InitCheckReport, trainer: Any) -> None:
    """Show the report of a Trainer run: rank zero only.

    A rich console table; for every ``TensorBoardLogger`` in ``trainer.loggers`` the markdown
    table as text (``lightning_init/check``) and the depth figure (``lightning_init/check_depth``);
    a JSON copy ``init_check.json`` in the first logger's ``log_dir``. Without a logger: console
    only. Never calls ``trainer.log_dir`` (it broadcasts, and only rank zero gets here).

    Args:
        report: the check's report.
        trainer: the ``lightning.Trainer``.

    Example:
        >>> import torch, lightning
        >>> trainer = lightning.Trainer(logger=False, enable_progress_bar=False)
        >>> report = check_init(torch.nn.Linear(2, 2), torch.randn(4, 2))
        >>> import contextlib, io
        >>> console_output = io.StringIO()
        >>> with contextlib.redirect_stdout(console_output):
        ...     publish_check_report(report, trainer)
        >>> "init check: OK, no problem found" in console_output.getvalue()
        True
    """
    if not getattr(trainer, "is_global_zero", True):
        return
    _print_rich(report)
    import os

    json_written = False
    for logger in getattr(trainer, "loggers", []) or []:
        if _is_tensorboard(logger):
            experiment = logger.experiment
            experiment.add_text("lightning_init/check", report.to_markdown(), global_step=0)
            figure = report.figure()
            experiment.add_figure("lightning_init/check_depth", figure, global_step=0)
            experiment.flush()
        log_dir = getattr(logger, "log_dir", None)
        if not json_written and log_dir:
            os.makedirs(log_dir, exist_ok=True)
            with open(os.path.join(log_dir, "init_check.json"), "w", encoding="utf-8") as file:
                file.write(report.to_json())
            json_written = True


def _is_tensorboard(logger: Any) -> bool:
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


def _print_rich(report: InitCheckReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lightning_init: init check", show_lines=False)
    for column in InitCheckReport._HEADER:
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    problem_layers = {name for problem in report.problems for name in problem.layers}
    for row, layer in zip(report._rows(), report.layers, strict=True):
        table.add_row(*row, style="red" if layer.name in problem_layers else None)
    console = Console()
    if not console.is_terminal:  # logs and notebooks: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)
    for line in report._summary_lines():
        console.print(line, style="red" if line.startswith("  - ") else None, markup=False,
                      highlight=False)


def raise_or_warn(report: InitCheckReport, options: CheckOptions) -> None:
    """Act on ``options.on_fail`` when the report has problems (used by the callback).

    Raises:
        InitCheckError: ``on_fail="raise"`` and problems were found; ``.report`` is attached.
    """
    if report.ok:
        return
    message = "lightning_init init check found {} problem(s):\n{}".format(
        len(report.problems), "\n".join(f"  - {problem.message}" for problem in report.problems))
    if options.on_fail == "raise":
        raise InitCheckError(message, report=report)
    warnings.warn(message, UserWarning, stacklevel=2)
