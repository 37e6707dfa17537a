"""``apply(model, only=names)``: a plan cut down to the parameters a checkpoint lacks.

The fine-tuning case: a pretrained model loaded with missing keys (a new head) gets the policy
on those parameters only; every other parameter keeps its loaded values bit for bit. Names are
qualified parameter names as ``model.named_parameters()`` (or ``state_dict()``) gives them, so
HF's ``loading_info["missing_keys"]`` and ``load_state_dict(strict=False).missing_keys`` can be
passed as they are; a buffer's name is accepted and ignored (a policy sets no buffers).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from lightning_init._text import did_you_mean
from lightning_init.errors import PolicyError
from lightning_init.policy.plan import Plan

__all__ = ["restrict"]


def _check_names(names: set[str], model: nn.Module, prefix: str) -> None:
    params = {n for n, _ in model.named_parameters(prefix=prefix, remove_duplicate=False)}
    buffers = {n for n, _ in model.named_buffers(prefix=prefix, remove_duplicate=False)}
    unknown = sorted(names - params - buffers)
    if unknown:
        shown = ", ".join(repr(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise PolicyError(
            f"{len(unknown)} name(s) are no parameter of {type(model).__name__}: {shown}{more}."
            f"{did_you_mean(unknown[0], params)} Give qualified parameter names, as "
            "model.named_parameters() lists them", where="only")


def restrict(plan: Plan, only: Iterable[str], model: nn.Module, *, prefix: str = "") -> Plan:
    """``plan`` with every parameter outside ``only`` moved to ``left_alone``.

    A tied parameter counts as named when any of its names is. A meta-device parameter left
    out would stay uninitialized memory, so it is an error.

    Raises:
        PolicyError: a name is no parameter (nor buffer) of the model, with a did-you-mean;
            a parameter outside ``only`` is on the meta device.

    Example:
        >>> from lightning_init.policy.plan import build_plan
        >>> from lightning_init.policy.schema import parse_policy
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> schema = parse_policy({"rules": [{"match": {"type": "Linear"}, "bias": "zeros"}]})
        >>> plan = restrict(build_plan(schema, net), ["1.bias"], net)
        >>> [i.target.qualified_name for i in plan.items], plan.left_alone[-1]
        (['1.bias'], ('0.bias', 'not in only'))
    """
    names = {only} if isinstance(only, str) else set(only)
    _check_names(names, model, prefix)
    kept = []
    for item in plan.items:
        target = item.target
        if names.intersection((target.qualified_name, *target.aliases)):
            kept.append(item)
            continue
        if any(t.is_meta for t in target.tensors):
            raise PolicyError(
                f"{target.qualified_name!r} is on the meta device but not in only=: it would "
                "stay uninitialized memory. Load it first, or name it in only=", where="only")
        plan.left_alone.append((target.qualified_name, "not in only"))
    kept_modules = {id(item.target.module) for item in kept if item.resets}
    plan.items = kept
    plan.resets = [module for module in plan.resets if id(module) in kept_modules]
    return plan
