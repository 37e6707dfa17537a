"""Init findings that are notes, not verdicts: read from the weights and the recorded shapes.

- uninitialized memory: a parameter holding values no initializer draws (denormal numbers,
  magnitudes above ``1e6``, mostly exact repeats of a few values), the sign of ``torch.empty`` /
  ``to_empty`` that nothing filled;
- an LSTM whose forget-gate bias is about 0 over long sequences: at init the cell state is
  halved at every step (``sigmoid(0) = 1/2``), so a gradient through ``T`` steps shrinks like
  ``2^-T``; Jozefowicz et al. 2015 ("An Empirical Exploration of Recurrent Network
  Architectures") set it to 1;
- a Hugging Face model whose ``_init_weights`` calls ``trunc_normal_(std=...)`` with torch's
  default bounds ``a=-2, b=2``: they are absolute, so at ``std=0.02`` the cut sits at 100 std
  and nothing is truncated; the cut meant is ``a=-2*std, b=2*std``.

Every note starts with :data:`PREFIX` so that a suggestion can count what it answers.

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(4, 4)
    >>> with torch.no_grad():
    ...     layer.weight[0, 0] = 1e-40
    >>> init_findings(layer, [])  # doctest: +ELLIPSIS
    ['init: `weight` holds 1 denormal value(s) ... -> initialize it (it looks like torch.empty ...']
"""

from __future__ import annotations

import copy
import itertools
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lightning_init.check.records import LayerRecord
from lightning_init.policy.initializers import idle_bounds
from lightning_init.runtime.distributed import is_dtensor

__all__ = ["LONG_SEQUENCE", "PREFIX", "REPEAT_SAMPLE", "init_findings"]

PREFIX = "init: "
LONG_SEQUENCE = 50  # steps from which a forget-gate bias of 0 is noted
_HUGE = 1e6
_ABOUT_ZERO = 0.25
REPEAT_SAMPLE = 65536  # values of each parameter the exact-repeat test reads
_MIN_VALUES = 64  # non-zero values from which exact repeats are judged
_FEW_VALUES = 2  # distinct non-zero values of a deliberate discrete init (eye, +-c)


def _extreme(name: str, values: torch.Tensor) -> str | None:
    """Denormal or huge values (``values`` are magnitudes)."""
    tiny = torch.finfo(values.dtype).tiny
    denormal = int(((values > 0) & (values < tiny)).sum())
    huge = int((torch.isfinite(values) & (values > _HUGE)).sum())
    if not denormal and not huge:
        return None
    found = ", ".join(part for part in (
        f"{denormal} denormal value(s) (below {tiny:.1e})" if denormal else "",
        f"{huge} value(s) above {_HUGE:.0e} in magnitude" if huge else "") if part)
    return (f"{PREFIX}`{name}` holds {found}, which no initializer draws -> initialize it (it "
            "looks like torch.empty / to_empty memory that nothing filled)")


def _same_rows(param: torch.Tensor, sample: torch.Tensor) -> bool:
    """Whether the sample's whole rows (slices along dim 0) are all equal: one table
    broadcast over the channels, as the state-space inits S4D (Gu et al. 2022, "On the
    Parameterization and Initialization of Diagonal State Space Models") and Mamba (Gu & Dao
    2023: ``A_log = log(arange(1, N + 1))`` for every channel) write on purpose."""
    if param.dim() < 2 or param.shape[0] < 2:
        return False
    row = param.numel() // param.shape[0]
    rows = sample[:sample.numel() // row * row].view(-1, row)
    return rows.shape[0] >= 2 and bool((rows == rows[0]).all())


def _repeats(name: str, param: torch.Tensor) -> str | None:
    """Mostly exact repeats among the non-zero values: fewer distinct ones than half their
    count (see :func:`_uninitialized` for what is left out and why)."""
    if torch.finfo(param.dtype).bits < 32 or not param.requires_grad or is_dtensor(param):
        return None
    sample = param.detach().reshape(-1)[:REPEAT_SAMPLE]
    values = sample[sample != 0]
    if values.numel() < _MIN_VALUES:
        return None
    distinct = torch.unique(values)
    count = distinct.numel()
    if (count <= _FEW_VALUES or 2 * count >= values.numel()
            or bool((distinct == distinct.round()).all()) or _same_rows(param, sample)):
        return None
    nonzero = "" if values.numel() == sample.numel() else " non-zero"
    held = (f"holds {values.numel()}{nonzero} values" if sample.numel() == param.numel()
            else f"holds, in its first {sample.numel()} values, {values.numel()}{nonzero} ones")
    return (f"{PREFIX}`{name}` {held} but only {count} distinct ones (exact repeats), which no "
            "random initializer draws -> initialize it, unless the pattern is deliberate (a "
            "fixed table, quantized values): it looks like torch.empty / to_empty memory that "
            "nothing filled")


def _uninitialized(model: nn.Module) -> list[str]:
    """Parameters that look like memory nothing filled.

    Two signs: values no initializer draws (denormal numbers, magnitudes above ``1e6``), and
    exact repeats: a floating tensor whose non-zero values (at least 64) hold fewer distinct
    values than half their count. A random init in float32 or float64 almost never repeats a
    value: ``normal``, ``uniform``, ``kaiming``, ``xavier``, ``orthogonal`` and ``trunc_normal``
    repeat at most 0.23% of 65536 float32 values (``uniform`` draws from 2^24 values, so its
    4M-value tensors repeat 11.5%; the test reads 65536). Left out, on purpose:

    - 16-bit and smaller dtypes: with 8 (bfloat16) or 11 (float16) significant bits a random
      init of 65536 values legitimately repeats 96% (bfloat16) or 80% (float16) of them;
    - deliberate discrete inits: at most 2 distinct non-zero values (zeros, ones, a constant,
      eye, dirac, +-c), integer values (an index table), the same row repeated along dim 0
      (:func:`_same_rows`: S4D / Mamba's ``A_log``), frozen parameters (``requires_grad``
      false: fixed tables, as MAE's 2-D sin-cos position embeddings, He et al. 2022);
    - sharded (DTensor) parameters.

    The test reads the first 65536 values of each parameter (``torch.unique`` sorts: O(n log
    n)), so that its cost does not grow with the model's widest tensor.

    Example:
        >>> layer = nn.Linear(48, 64)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.randn(64).repeat(48).view(64, 48))
        >>> _uninitialized(layer)  # doctest: +ELLIPSIS
        ['init: `weight` holds 3072 values but only 64 distinct ones (exact repeats), ...']
    """
    notes = []
    for name, param in model.named_parameters():
        if not param.is_floating_point() or param.is_meta or param.numel() == 0:
            continue
        with torch.no_grad():
            found = (_extreme(name, param.detach().abs()), _repeats(name, param))
        notes.extend(note for note in found if note is not None)
    return notes


def _sequence_length(module: nn.LSTM, record: LayerRecord) -> int | None:
    if len(record.shape) != 3:
        return None
    return record.shape[1] if module.batch_first else record.shape[0]


def _forget_bias(model: nn.Module, layers: Sequence[LayerRecord]) -> list[str]:
    modules = dict(model.named_modules())
    notes = []
    for record in layers:
        module = modules.get(record.name)
        if not isinstance(module, nn.LSTM) or not module.bias:
            continue
        steps = _sequence_length(module, record)
        if steps is None or steps < LONG_SEQUENCE:
            continue
        size = module.hidden_size
        with torch.no_grad():
            forget = torch.stack([
                (getattr(module, f"bias_ih_l{k}")[size:2 * size]
                 + getattr(module, f"bias_hh_l{k}")[size:2 * size]).float().mean()
                for k in range(module.num_layers)])
        if float(forget.abs().max()) < _ABOUT_ZERO:
            notes.append(
                f"{PREFIX}`{record.name}` (LSTM): the forget-gate bias is about 0 (mean "
                f"{float(forget.mean()):.2g}) over sequences of {steps} steps: at init the cell "
                "state is halved at every step and gradients through the sequence vanish -> "
                "forget-gate bias 1 (Jozefowicz et al. 2015): the `lstm` preset, or "
                "report.suggest_policy()")
    return notes


# ------------------------------------------------------------- trunc_normal_ with idle bounds

_Call = tuple[torch.Tensor, float, float, float, float]  # (tensor, mean, std, a, b)
_SHOWN = 3  # parameters named in one note; the rest are counted


def _init_weights(model: nn.Module) -> Callable[[nn.Module], Any] | None:
    """A Hugging Face ``PreTrainedModel``'s ``_init_weights``, else ``None`` (transformers is
    not imported for it: a model of it has imported it)."""
    modeling = sys.modules.get("transformers.modeling_utils")
    pretrained = getattr(modeling, "PreTrainedModel", None)
    if pretrained is None or not isinstance(model, pretrained):
        return None
    method = getattr(model, "_init_weights", None)
    return method if callable(method) else None


@contextmanager
def _recording(calls: list[_Call]) -> Iterator[None]:
    """``trunc_normal_`` of ``torch.nn.init`` and of ``transformers.initialization`` (which
    calls torch's through a table bound at import) wrapped by a recorder that calls the
    original; restored on exit."""
    owners = [torch.nn.init, sys.modules.get("transformers.initialization")]
    originals = [(owner, owner.trunc_normal_) for owner in owners
                 if owner is not None and callable(getattr(owner, "trunc_normal_", None))]

    def recorder(original: Callable[..., Any]) -> Callable[..., Any]:
        def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0,
                          a: float = -2.0, b: float = 2.0, *args: Any, **kwargs: Any) -> Any:
            calls.append((tensor, float(mean), float(std), float(a), float(b)))
            return original(tensor, mean, std, a, b, *args, **kwargs)
        return trunc_normal_

    try:
        for owner, original in originals:
            owner.trunc_normal_ = recorder(original)
        yield
    finally:
        for owner, original in originals:
            owner.trunc_normal_ = original


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are meta tensors: nothing is
    allocated nor drawn, and the model is not touched."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        twin = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (nn.Parameter(twin, requires_grad=tensor.requires_grad)
                            if isinstance(tensor, nn.Parameter) else twin)
    return copy.deepcopy(model, memo)


def _same_storage(one: torch.Tensor, other: torch.Tensor) -> bool:
    try:
        return one.untyped_storage()._cdata == other.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def _attributed(module_name: str, module: nn.Module, tensor: torch.Tensor) -> str:
    """The name of the module's tensor that ``tensor`` is (or views); for a temporary copy
    (``weight.data.to(torch.float32)``) the one tensor of its shape, else the module."""
    named = [*module.named_parameters(), *module.named_buffers()]
    hit = next((name for name, own in named if own is tensor or _same_storage(own, tensor)),
               None)
    if hit is None:
        shaped = [name for name, own in named if own.shape == tensor.shape]
        hit = shaped[0] if len(shaped) == 1 else None
    if hit is None:
        return f"{module_name or type(module).__name__} (a tensor of shape {tuple(tensor.shape)})"
    return f"{module_name}.{hit}" if module_name else hit


def _trunc_normal_calls(model: nn.Module) -> list[tuple[str, float, float, float, float]]:
    """``(parameter, mean, std, a, b)`` of every ``trunc_normal_`` that the model's own
    ``_init_weights`` makes, run module by module on a meta copy (see :func:`_idle_bounds`)."""
    if _init_weights(model) is None or any(is_dtensor(p) for p in model.parameters()):
        return []  # a sharded model: its init code is the one it had before sharding
    try:
        twin = _meta_copy(model)
    except Exception:  # a model that cannot be copied: no finding
        return []
    init_weights = _init_weights(twin)
    found: list[tuple[str, float, float, float, float]] = []
    calls: list[_Call] = []
    with (torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings(),
          _recording(calls)):
        warnings.simplefilter("ignore")
        for module_name, module in twin.named_modules():
            calls.clear()
            try:
                init_weights(module)  # type: ignore[misc]
            except Exception:  # an init that reads values (.item()) cannot run on meta
                continue
            found.extend((_attributed(module_name, module, tensor), mean, std, a, b)
                         for tensor, mean, std, a, b in calls)
    return found


def _idle_bounds(model: nn.Module) -> list[str]:
    """``trunc_normal_`` calls in a Hugging Face model's ``_init_weights`` whose absolute
    bounds (torch's default ``a=-2, b=2``) cut nothing at their std.

    The calls are recorded on a copy of the model whose tensors are on the meta device: its
    ``_init_weights`` runs module by module (so a call is attributed to the module being
    initialized even when it fills a temporary, as ``weight.data.to(torch.float32)``) with
    ``trunc_normal_`` of ``torch.nn.init`` and ``transformers.initialization`` wrapped by a
    recorder, restored afterwards. The model itself, its weights and the random state are not
    touched; an init that cannot run on meta tensors is skipped. One note per (mean, std, a, b).
    """
    groups: dict[tuple[float, float, float, float], list[str]] = {}
    for name, mean, std, a, b in _trunc_normal_calls(model):
        names = groups.setdefault((mean, std, a, b), [])
        if name not in names:
            names.append(name)
    notes = []
    for (mean, std, a, b), names in groups.items():
        said = idle_bounds(mean, std, a, b)
        if said is None:
            continue
        shown = ", ".join(f"`{name}`" for name in names[:_SHOWN])
        more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        notes.append(f"{PREFIX}the model's _init_weights draws {shown}{more} with "
                     f"trunc_normal_(mean={mean:.4g}, std={std:.4g}): its {said}")
    return notes


def init_findings(model: nn.Module, layers: Sequence[LayerRecord]) -> list[str]:
    """The notes on ``model``'s weights: uninitialized memory, LSTM forget-gate bias, and
    ``trunc_normal_`` bounds that truncate nothing in a Hugging Face model's ``_init_weights``.

    Args:
        model: the checked model.
        layers: the check's layer records (their output shapes give sequence lengths).

    Returns:
        One sentence per finding, each starting with :data:`PREFIX`.
    """
    return [*_uninitialized(model), *_forget_bias(model, layers), *_idle_bounds(model)]
