"""Console alerts: per logged step, one line per kind of problem, naming the worst parameters,
how many there are, the step and what to do.

The checks collect :class:`Finding` s while a step is read; :meth:`Alerts.report` then writes
each kind once, through the ``lightning_init`` logger, and again only when new parameters join
it or it gets ten times worse. NaN/Inf gradients are the one alert the user must act on: a
:class:`DiagnosticsWarning`, once, or a :class:`NonFiniteError` with ``on_nonfinite="raise"``.

The update-ratio band knows the optimizer: a normalized optimizer (Adam and its kin) moves every
element by about ``lr`` on its first steps, whatever the gradient, so a weight of typical
magnitude ``rms(w)`` sees ratios near ``lr / rms(w)`` by design (0.15 to 0.7 for GPT-2's N(0,
0.02) weights at ``lr=3e-3``). Kingma & Ba 2015 (arXiv:1412.6980, section 2.1) bound Adam's
element step by ``lr * max(1, (1 - beta1) / sqrt(1 - beta2))``; the upper limit of the band is
raised to that bound divided by ``rms(w)``, at most to 1 (a step as large as the weight itself).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_init._log import LOGGER, warn_user

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.diagnostics._options import DiagnosticsOptions

__all__ = [
    "Alerts",
    "DiagnosticsWarning",
    "Finding",
    "NonFiniteError",
    "check_dead_layer",
    "check_gradient",
    "check_update_ratio",
    "element_step_bound",
]


class DiagnosticsWarning(UserWarning):
    """A warning of the training diagnostics the user must act on: NaN/Inf gradients, or the
    diagnostics themselves failing. Filter it with ``warnings.filterwarnings``.

    Example:
        >>> issubclass(DiagnosticsWarning, UserWarning)
        True
    """


class NonFiniteError(RuntimeError):
    """A gradient holds NaN/Inf values and ``on_nonfinite="raise"``: the run stops.

    Attributes:
        step: the optimizer step index.
        names: the parameters whose gradient is not finite, the likeliest origin first.

    Example:
        >>> error = NonFiniteError("step 3: 'fc.weight' ...", step=3, names=["fc.weight"])
        >>> isinstance(error, RuntimeError), error.names
        (True, ['fc.weight'])
    """

    def __init__(self, message: str, *, step: int, names: list[str]) -> None:
        super().__init__(message)
        self.step = step
        self.names = names


NonFiniteError.__module__ = "lightning_init.diagnostics"  # its public path


@dataclass(frozen=True)
class Finding:
    """One parameter (or layer) out of bounds at a step.

    Attributes:
        kind: ``"nonfinite"``, ``"exploding"``, ``"vanishing"``, ``"dead"``, ``"update_large"``
            or ``"update_small"``.
        name: the parameter's (or leaf module's) qualified name.
        text: what is wrong, with the number and the limit.
        value: the number shown next to the name in a listing.
        severity: how far past the limit (larger is worse).
    """

    kind: str
    name: str
    text: str
    value: float
    severity: float


_KINDS = ("nonfinite", "exploding", "vanishing", "dead", "update_large", "update_small")
_COUNTED = {"nonfinite": "gradients", "exploding": "gradients", "vanishing": "gradients",
            "dead": "layers", "update_large": "weights", "update_small": "weights"}
_NOUN = {"gradients": "parameters", "weights": "weight matrices", "layers": "layers"}
_WORSE = 10.0  # a kind already reported is reported again when this many times worse
_SHOWN = 3  # names listed after the worst one

_ADVICE = {
    "nonfinite": "the run is broken from here. Look for a log or division at 0, a float16 "
    "overflow or a learning rate far too large; diagnostics={'on_nonfinite': 'raise'} stops "
    "the run at the first one.",
    "exploding": "the weights are too large for the depth, or the learning rate too high: use a "
    "fan-in scaled init (policy 'kaiming_relu' for ReLU nets, 'xavier' for tanh), lower the "
    "learning rate, or clip gradients (Trainer(gradient_clip_val=1.0)).",
    "vanishing": "these parameters get no gradient: look for dead ReLUs (large negative "
    "biases), saturated tanh/sigmoid, a detached branch, or weights too small for the depth.",
    "dead": "these units output 0 on every sample: zero the biases, use a fan-in scaled init "
    "(policy 'kaiming_relu'), or a LeakyReLU.",
    "update_large": "each step changes these weights by a large part of their size (rule of "
    "thumb: about 1e-3): lower the learning rate or add a warm-up.",
    "update_small": "these weights barely move (rule of thumb: about 1e-3): raise the learning "
    "rate, or look at the gradients reaching them.",
}


def _number(value: float) -> str:
    return f"{value:.3g}"


def _percent(value: float) -> str:
    return f"{value:.0%}"


class Alerts:
    """Collects a step's findings, then reports each kind once, on rank zero (the caller's).

    ``raised`` holds ``"<kind>:<name>"`` for every finding reported: the checkpoint keeps it, so
    that a resumed run does not report them again.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> alerts, options = Alerts(), DiagnosticsOptions()
        >>> for name, norm in [("net.0.weight", 5e4), ("net.2.weight", 2e5), ("net.4.weight", 1)]:
        ...     check_gradient(alerts, options, name, norm=norm, nonfinite=0, numel=64)
        >>> print(*alerts.lines(0), sep="\\n")  # doctest: +NORMALIZE_WHITESPACE
        lightning_init diagnostics, step 0: 'net.2.weight': exploding gradient: norm 2e+05 > 1000,
        and 1 more of 3 parameters ('net.0.weight' 5e+04). What to do: the weights are too large
        for the depth, or the learning rate too high: use a fan-in scaled init (policy
        'kaiming_relu' for ReLU nets, 'xavier' for tanh), lower the learning rate, or clip
        gradients (Trainer(gradient_clip_val=1.0)).
        >>> check_gradient(alerts, options, "net.2.weight", norm=3e5, nonfinite=0, numel=64)
        >>> alerts.lines(1)  # the same kind, not worse and no new parameter: nothing
        []
    """

    def __init__(self, raised: Iterable[str] = ()) -> None:
        self.raised: set[str] = set(raised)
        self._found: list[Finding] = []
        self._counted: dict[str, int] = {}
        self._worst: dict[str, float] = {}

    def add(self, finding: Finding) -> None:
        """A finding of the step being read."""
        self._found.append(finding)

    def count(self, what: str) -> None:
        """One more ``"gradients"``, ``"weights"`` or ``"layers"`` checked this step."""
        self._counted[what] = self._counted.get(what, 0) + 1

    def lines(self, step: int) -> list[str]:
        """The step's report, one line per kind worth reporting; forgets the step's findings."""
        return [line for _, line in self._kind_lines(step)]

    def report(self, step: int, on_nonfinite: str = "warn") -> list[str]:
        """Write the step's report: NaN/Inf as a :class:`DiagnosticsWarning` (or raised), the
        other kinds through the ``lightning_init`` logger. Returns the lines written.

        Raises:
            NonFiniteError: a gradient is not finite and ``on_nonfinite == "raise"``.
        """
        nonfinite = [f for f in self._found if f.kind == "nonfinite"]
        if nonfinite and on_nonfinite == "raise":
            ordered = _ordered("nonfinite", nonfinite)
            total = self._counted.get("gradients", len(ordered))
            self._found, self._counted = [], {}
            raise NonFiniteError(_line(step, "nonfinite", ordered, total), step=step,
                                 names=[f.name for f in ordered])
        written = self._kind_lines(step)
        for kind, line in written:
            if kind == "nonfinite":
                warn_user(line, DiagnosticsWarning)
            else:
                LOGGER.warning(line)
        return [line for _, line in written]

    def _kind_lines(self, step: int) -> list[tuple[str, str]]:
        found, counted = self._found, self._counted
        self._found, self._counted = [], {}
        if any(key.startswith("nonfinite:") for key in self.raised):
            return []  # NaN/Inf was reported at an earlier step: everything follows from it
        lines = []
        for kind in _KINDS:
            shown = self._to_report(kind, [f for f in found if f.kind == kind])
            if shown:
                total = counted.get(_COUNTED[kind], len(shown))
                lines.append((kind, _line(step, kind, shown, total)))
        return lines

    def _to_report(self, kind: str, findings: list[Finding]) -> list[Finding]:
        """The findings of ``kind`` worth a line: those not reported yet, or all of them when
        the kind got ``_WORSE`` times worse."""
        if not findings:
            return []
        worst = max(f.severity for f in findings)
        previous = self._worst.get(kind)
        new = [f for f in findings if f"{kind}:{f.name}" not in self.raised]
        if previous is not None and worst >= _WORSE * previous:
            new = findings
        if not new:
            return []
        self._worst[kind] = max(worst, previous or 0.0)
        self.raised.update(f"{kind}:{f.name}" for f in new)
        return _ordered(kind, new)


def _ordered(kind: str, findings: list[Finding]) -> list[Finding]:
    """Worst first. NaN/Inf: the layer nearest the output first (backward starts there), then
    the most values."""
    if kind != "nonfinite":
        return sorted(findings, key=lambda f: -f.severity)
    modules = list(dict.fromkeys(f.name.rpartition(".")[0] for f in findings))
    return sorted(
        findings, key=lambda f: (-modules.index(f.name.rpartition(".")[0]), -f.severity)
    )


def _line(step: int, kind: str, findings: list[Finding], total: int) -> str:
    worst, others = findings[0], findings[1:]
    noun = _NOUN[_COUNTED[kind]]
    text = f"lightning_init diagnostics, step {step}: {worst.name!r}: {worst.text}"
    if others:
        shown = _percent if kind == "dead" else _number
        listed = ", ".join(f"{f.name!r} {shown(f.value)}" for f in others[:_SHOWN])
        if len(others) > _SHOWN:
            listed += f", ... {len(others) - _SHOWN} more"
        text += f", and {len(others)} more of {max(total, len(findings))} {noun} ({listed})"
    return f"{text}. What to do: {_ADVICE[kind]}"


def check_gradient(
    alerts: Alerts, options: DiagnosticsOptions, name: str, *, norm: float, nonfinite: int,
    numel: int,
) -> None:
    """NaN/Inf values, else a vanishing or an exploding norm.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> alerts = Alerts()
        >>> check_gradient(alerts, DiagnosticsOptions(), "w", norm=0.0, nonfinite=0, numel=4)
        >>> alerts.lines(2)[0].split(". What")[0]
        "lightning_init diagnostics, step 2: 'w': vanishing gradient: norm 0 <= 1e-08"
    """
    if not options.alerts:
        return
    alerts.count("gradients")
    if nonfinite:
        alerts.add(Finding("nonfinite", name, f"gradient has {nonfinite} NaN/Inf values of "
                           f"{numel}", nonfinite, nonfinite / max(numel, 1)))
    elif norm <= options.vanishing_grad_norm:
        alerts.add(Finding("vanishing", name, f"vanishing gradient: norm {norm:.3g} <= "
                           f"{options.vanishing_grad_norm:g}", norm,
                           options.vanishing_grad_norm / max(norm, 1e-300)))
    elif norm > options.exploding_grad_norm:
        alerts.add(Finding("exploding", name, f"exploding gradient: norm {norm:.3g} > "
                           f"{options.exploding_grad_norm:g}", norm,
                           norm / max(options.exploding_grad_norm, 1e-300)))


def element_step_bound(optimizer: Any, group: Mapping[str, Any]) -> float | None:
    """The largest step a normalized optimizer makes on one element, or ``None`` for an
    optimizer whose step scales with the gradient (SGD and the like).

    Adam and its kin (a ``betas`` pair): ``lr * max(1, (1 - beta1) / sqrt(1 - beta2))``
    (Kingma & Ba 2015, section 2.1); Lion (sign updates) and Adagrad: ``lr``; RMSprop, whose
    first step divides by ``sqrt(1 - alpha) |g|``: ``lr / sqrt(1 - alpha)``.

    Example:
        >>> import torch
        >>> params = [torch.nn.Parameter(torch.zeros(2))]
        >>> adam = torch.optim.Adam(params, lr=1e-3)
        >>> round(element_step_bound(adam, adam.param_groups[0]), 6)
        0.003162
        >>> sgd = torch.optim.SGD(params, lr=0.1)
        >>> element_step_bound(sgd, sgd.param_groups[0]) is None
        True
    """
    name = type(optimizer).__name__.lower()
    lr = group.get("lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        return None
    betas = group.get("betas")
    if "lion" in name or "adagrad" in name:
        return float(lr)
    if isinstance(betas, (tuple, list)) and len(betas) >= 2 and 0 <= betas[1] < 1:
        return float(lr) * max(1.0, (1 - betas[0]) / math.sqrt(1 - betas[1]))
    alpha = group.get("alpha")
    if "rmsprop" in name and isinstance(alpha, (int, float)) and 0 <= alpha < 1:
        return float(lr) / math.sqrt(1 - alpha)
    return None


def check_update_ratio(
    alerts: Alerts, options: DiagnosticsOptions, name: str, ratio: float, *,
    normal_ratio: float | None = None, smallness: float = 1.0,
) -> None:
    """A weight matrix's update ratio out of ``update_ratio_band``.

    The upper limit of the band knows the optimizer and the weight's scale:

    - ``normal_ratio``: the ratio a normalized optimizer makes by design (its element step
      bound over the weight's root mean square); the limit rises to it, at most to 1.
    - ``smallness``: how many times the weight's norm is below LeCun's scale (element std
      ``1 / sqrt(fan_in)``, LeCun et al. 1998, "Efficient BackProp"), at least 1. A weight
      initialized small (N(0, 0.02) before a normalization layer) moves by large relative
      amounts while it grows, as a zero bias does: the limit is multiplied by it.

    A zero update is a skipped step (AMP overflow, zero learning rate), not a bad init: no
    alert. The caller passes matrices only: vectors (biases, norm gains) start at 0 or 1 and
    move by large relative amounts early on.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> alerts, options = Alerts(), DiagnosticsOptions()
        >>> for ratio in (1e-3, 0.0, 0.5):
        ...     check_update_ratio(alerts, options, f"w{ratio}", ratio)
        >>> check_update_ratio(alerts, options, "adam", 0.5, normal_ratio=0.8)  # Adam: normal
        >>> check_update_ratio(alerts, options, "small", 0.5, smallness=10.0)  # growing: normal
        >>> [line.split(". What")[0] for line in alerts.lines(1)]
        ["lightning_init diagnostics, step 1: 'w0.5': update ratio ||w_t - w_(t-1)|| / ||w_(t-1)|| = 0.5 is above 0.1"]
    """  # noqa: E501
    if not options.alerts or not ratio > 0:
        return
    alerts.count("weights")
    low, high = options.update_ratio_band
    high *= max(smallness, 1.0)
    if normal_ratio is not None:
        high = max(high, min(normal_ratio, 1.0))
    what = "update ratio ||w_t - w_(t-1)|| / ||w_(t-1)||"
    if ratio > high:
        alerts.add(Finding("update_large", name, f"{what} = {ratio:.3g} is above {high:.3g}",
                           ratio, ratio / high))
    elif ratio < low:
        alerts.add(Finding("update_small", name, f"{what} = {ratio:.3g} is below {low:g}",
                           ratio, low / ratio))


def check_dead_layer(
    alerts: Alerts, options: DiagnosticsOptions, name: str, *, dead: float, units: float,
) -> None:
    """At least ``dead_fraction`` of a layer's units output exactly 0 throughout.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> alerts = Alerts()
        >>> check_dead_layer(alerts, DiagnosticsOptions(), "net.1", dead=15, units=16)
        >>> alerts.lines(0)[0].split(". What")[0]
        "lightning_init diagnostics, step 0: 'net.1': dead layer: 94% of its 16 units output exactly 0 on every sample"
    """  # noqa: E501
    if not options.alerts or units <= 0:
        return
    alerts.count("layers")
    if dead / units >= options.dead_fraction:
        alerts.add(Finding("dead", name, f"dead layer: {dead / units:.0%} of its {int(units)} "
                           "units output exactly 0 on every sample", dead / units, dead / units))
