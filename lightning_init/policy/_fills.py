"""The fill functions that ``torch.nn.init`` lacks or that ignore a generator, and their math.

Every function fills ``tensor`` in place and returns it, like ``torch.nn.init``. The fan-based
ones take ``fans=(fan_in, fan_out)`` from the policy, which reads them by the layer type's
weight layout (:mod:`lightning_init.anatomy.layouts`); without it they read the shape as
``torch.nn.init`` does. Given torch's fans they draw exactly what ``torch.nn.init`` draws.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "IDLE_CUT",
    "TRUNC_STD_2",
    "fans",
    "idle_bounds",
    "kaiming_normal_",
    "kaiming_std",
    "kaiming_uniform_",
    "lecun_normal_",
    "orthogonal_",
    "prior_bias_",
    "prior_logit",
    "sparse_",
    "truncnorm_moments",
    "variance_scaling_",
    "variance_scaling_std",
    "xavier_normal_",
    "xavier_std",
    "xavier_uniform_",
]

Fans = tuple[int, int]

#: Std of a standard normal truncated to [-2, 2] (Flax/JAX ``variance_scaling``; timm).
TRUNC_STD_2 = 0.87962566103423978


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in, fan_out as ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them.

    Example:
        >>> fans((64, 32, 3, 3))
        (288, 576)
    """
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fans_of(tensor: torch.Tensor, given: Fans | None) -> Fans:
    return fans(tuple(tensor.shape)) if given is None else given


def kaiming_std(fan_pair: Fans, a: float, mode: str, nonlinearity: str) -> float:
    """``gain / sqrt(fan)`` (He et al. 2015), ``fan`` the fan_in or fan_out of ``fan_pair``.

    Example:
        >>> round(kaiming_std((128, 10), 0, "fan_in", "relu"), 4)
        0.125
    """
    fan = fan_pair[0] if mode == "fan_in" else fan_pair[1]
    return torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)


def xavier_std(fan_pair: Fans, gain: float) -> float:
    """``gain * sqrt(2 / (fan_in + fan_out))`` (Glorot & Bengio 2010).

    Example:
        >>> xavier_std((300, 100), 1.0)
        0.07071067811865475
    """
    return gain * math.sqrt(2.0 / float(fan_pair[0] + fan_pair[1]))


def kaiming_normal_(tensor: torch.Tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator: torch.Generator | None = None,
                    fans: Fans | None = None) -> torch.Tensor:
    """N(0, kaiming_std^2), as ``torch.nn.init.kaiming_normal_`` but with given fans.

    Example:
        >>> w = torch.empty(768, 3072)  # a (in, out) weight: fan_in is 768
        >>> round(kaiming_normal_(w, nonlinearity="relu", fans=(768, 3072)).std().item(), 3)
        0.051
    """
    std = kaiming_std(_fans_of(tensor, fans), a, mode, nonlinearity)
    return tensor.normal_(0, std, generator=generator)


def kaiming_uniform_(tensor: torch.Tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator: torch.Generator | None = None,
                     fans: Fans | None = None) -> torch.Tensor:
    """U(-sqrt(3) std, sqrt(3) std) with std = kaiming_std, as ``torch.nn.init``'s.

    Example:
        >>> w = kaiming_uniform_(torch.empty(8, 12), nonlinearity="linear", fans=(3, 32))
        >>> bool(w.abs().max() <= 1.0)
        True
    """
    bound = math.sqrt(3.0) * kaiming_std(_fans_of(tensor, fans), a, mode, nonlinearity)
    return tensor.uniform_(-bound, bound, generator=generator)


def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0,
                    generator: torch.Generator | None = None,
                    fans: Fans | None = None) -> torch.Tensor:
    """U(-a, a), a = sqrt(3) xavier_std, as ``torch.nn.init.xavier_uniform_``.

    Example:
        >>> w = xavier_uniform_(torch.empty(300, 200))
        >>> bool(w.abs().max() <= math.sqrt(6 / 500))
        True
    """
    bound = math.sqrt(3.0) * xavier_std(_fans_of(tensor, fans), gain)
    return tensor.uniform_(-bound, bound, generator=generator)


def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0,
                   generator: torch.Generator | None = None,
                   fans: Fans | None = None) -> torch.Tensor:
    """N(0, xavier_std^2), as ``torch.nn.init.xavier_normal_``.

    Example:
        >>> round(xavier_normal_(torch.empty(400, 600)).std().item(), 3)
        0.045
    """
    return tensor.normal_(0.0, xavier_std(_fans_of(tensor, fans), gain), generator=generator)


def _norm_pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncnorm_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and std of N(mean, std^2) truncated to [a, b] (Johnson, Kotz & Balakrishnan 1994).

    Example:
        >>> [round(m, 4) for m in truncnorm_moments(0.0, 1.0, -2.0, 2.0)]
        [0.0, 0.8796]
        >>> [round(m, 5) for m in truncnorm_moments(0.0, 0.02, -2.0, 2.0)]
        [0.0, 0.02]
    """
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = _norm_cdf(beta) - _norm_cdf(alpha)
    if mass <= 0.0:
        return float("nan"), float("nan")
    pdf_a, pdf_b = _norm_pdf(alpha), _norm_pdf(beta)
    ratio = (pdf_a - pdf_b) / mass
    a_term = 0.0 if math.isinf(alpha) else alpha * pdf_a
    b_term = 0.0 if math.isinf(beta) else beta * pdf_b
    factor = 1.0 + (a_term - b_term) / mass - ratio * ratio  # the variance over std^2
    return mean + std * ratio, std * math.sqrt(max(factor, 0.0))


#: Bounds further than this many std from the mean cut less than ``Phi(-6) = 9.9e-10`` of a
#: normal's mass on their side: they truncate nothing.
IDLE_CUT = 6.0


def idle_bounds(mean: float, std: float, a: float, b: float) -> str | None:
    """Says so when ``trunc_normal_(mean, std, a, b)``'s finite bounds truncate nothing.

    ``torch.nn.init.trunc_normal_`` takes absolute bounds, ``a=-2, b=2`` by default: at
    ``std=0.02`` they sit at 100 std, so the "truncated" normal is a plain normal (Hugging
    Face's ViT and timm call it so). The cut meant is usually at 2 std: ``a=-2*std, b=2*std``.
    A bound more than :data:`IDLE_CUT` std from the mean cuts less than ``1e-9`` of the mass;
    an infinite bound is a deliberate open side and is not reported.

    Args:
        mean: the normal's mean.
        std: its std.
        a: the lower bound (absolute).
        b: the upper bound (absolute).

    Returns:
        The finding (what the bounds do and the fix), without a subject; ``None`` when each
        finite bound cuts.

    Example:
        >>> idle_bounds(0.0, 0.02, -2.0, 2.0)  # doctest: +ELLIPSIS
        'bounds a=-2, b=2 are absolute, ... at -100 / +100 std, so nothing is truncated ...'
        >>> idle_bounds(0.0, 0.02, -2.0, 2.0).split(" -> ")[1]
        'a=-2*std, b=2*std (a=-0.04, b=0.04)'
        >>> idle_bounds(0.0, 0.02, -0.04, 0.04) is None
        True
    """
    if not (std > 0 and math.isfinite(std)):
        return None
    low, high = (mean - a) / std, (b - mean) / std
    idle = [math.isfinite(cut) and cut > IDLE_CUT for cut in (low, high)]
    if not any(idle):
        return None
    what = ("nothing is truncated (a plain normal)" if all(idle)
            else f"the {'lower' if idle[0] else 'upper'} bound truncates nothing")
    fix = ("a=-2*std, b=2*std" if mean == 0 else "a=mean-2*std, b=mean+2*std")
    return (f"bounds a={a:.4g}, b={b:.4g} are absolute, not in std units: at std {std:.4g} they "
            f"cut at -{low:.3g} / +{high:.3g} std, so {what} -> {fix} "
            f"(a={mean - 2 * std:.4g}, b={mean + 2 * std:.4g})")


def variance_scaling_std(fan_pair: Fans, scale: float, mode: str) -> float:
    """``sqrt(scale / fan)``, the std of ``variance_scaling`` (fan_avg: the mean of both fans).

    Example:
        >>> variance_scaling_std((16, 10), 4.0, "fan_in")
        0.5
    """
    fan_in, fan_out = fan_pair
    denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return math.sqrt(scale / denominator)


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "normal",
    generator: torch.Generator | None = None,
    fans: Fans | None = None,
) -> torch.Tensor:
    """Variance ``scale / fan`` from a truncated normal (cut at 2 std), a normal or a uniform.

    Example:
        >>> w = variance_scaling_(torch.empty(500, 400), 2.0, "fan_in", "uniform")
        >>> round(w.std().item(), 2)
        0.07
    """
    std = variance_scaling_std(_fans_of(tensor, fans), scale, mode)
    if distribution == "truncated_normal":
        raw = std / TRUNC_STD_2
        return torch.nn.init.trunc_normal_(
            tensor, 0.0, raw, -2.0 * raw, 2.0 * raw, generator=generator
        )
    if distribution == "normal":
        return tensor.normal_(0.0, std, generator=generator)
    bound = math.sqrt(3.0) * std
    return tensor.uniform_(-bound, bound, generator=generator)


def lecun_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None,
                  fans: Fans | None = None) -> torch.Tensor:
    """``variance_scaling(1, fan_in, truncated_normal)`` (LeCun et al. 1998).

    Example:
        >>> round(lecun_normal_(torch.empty(400, 100)).std().item(), 2)
        0.1
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator=generator,
                             fans=fans)


def prior_logit(prob: float) -> float:
    """``-log((1 - prob) / prob)``, finite for every prob in (0, 1): where the ratio overflows
    (prob below about 1e-308), the same logit as ``log(prob) - log1p(-prob)``.

    Example:
        >>> round(prior_logit(0.01), 3), round(prior_logit(1e-310), 1)
        (-4.595, -713.8)
    """
    ratio = (1.0 - prob) / prob
    return -math.log(ratio) if math.isfinite(ratio) else math.log(prob) - math.log1p(-prob)


def prior_bias_(tensor: torch.Tensor, prob: float = 0.01) -> torch.Tensor:
    """``-log((1 - prob) / prob)``: the classification-head prior of Lin et al. 2017.

    Example:
        >>> round(prior_bias_(torch.empty(2)).tolist()[0], 3)
        -4.595
    """
    return tensor.fill_(prior_logit(prob))


def orthogonal_(
    tensor: torch.Tensor, gain: float = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``torch.nn.init.orthogonal_`` (same draws), computed in float32 for half precision.

    Example:
        >>> q = orthogonal_(torch.empty(4, 4, dtype=torch.bfloat16)).float()
        >>> torch.allclose(q @ q.T, torch.eye(4), atol=0.02)
        True
    """
    rows = tensor.size(0)
    cols = tensor.numel() // rows
    work_dtype = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.dtype
    flat = torch.empty((rows, cols), dtype=work_dtype, device=tensor.device)
    flat.normal_(0, 1, generator=generator)
    if rows < cols:
        flat.t_()
    q, r = torch.linalg.qr(flat)
    q *= torch.diag(r, 0).sign()  # Mezzadri 2007: makes Q Haar-distributed
    if rows < cols:
        q.t_()
    q.mul_(gain)
    return tensor.copy_(q.reshape(tensor.shape))


def sparse_(
    tensor: torch.Tensor,
    sparsity: float,
    std: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``torch.nn.init.sparse_``'s distribution (Martens 2010), batched and honouring
    ``generator`` (torch's draws the zero positions from the global RNG).

    Example:
        >>> w = sparse_(torch.empty(10, 3), 0.3)
        >>> (w == 0).sum(dim=0).tolist()
        [3, 3, 3]
    """
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    tensor.normal_(0.0, std, generator=generator)
    if num_zeros:
        keys = torch.rand((rows, cols), generator=generator, device=tensor.device)
        zero_rows = keys.argsort(dim=0)[:num_zeros]
        tensor.scatter_(0, zero_rows, 0.0)
    return tensor
