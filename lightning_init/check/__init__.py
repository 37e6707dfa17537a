"""The init check: one forward and backward pass that tells a good init from a bad one.

:func:`check_init` runs the model once on a sample batch with forward hooks on every module,
measures each output (mean, std, input dependence, dead units, saturation, NaN/Inf) and each
parameter's gradient, and turns the numbers into verdicts naming the layer, the number, the
expectation and a likely fix. :func:`lsuv_init` is the data-dependent LSUV init (Mishkin & Matas
2015). :func:`check_lightning_module` and :func:`publish_check_report` are the Lightning glue
used by ``InitCallback``.

The check leaves no trace: hooks are removed even when the forward raises; weights, buffers
(BatchNorm running statistics), ``.grad``, every module's train/eval mode and the RNG states are
as before. Gradients come from ``torch.autograd.grad`` (``.grad`` and DDP's reducer untouched);
under FSDP2, from a ``.backward()`` with every ``.grad`` restored after.

Inside: ``options`` (:class:`CheckOptions`), ``measure`` (hooks and statistics of one pass),
``run`` (the pass, measured and judged), ``verdicts`` and ``roles`` (numbers to problems),
``embeddings`` (the embedding verdict), ``unread`` (zero gradients no init changes),
``classes`` (C from the classification loss), ``_theory`` (the initial loss of logits of a given
spread), ``gates``, ``findings`` and ``ignore`` (deliberate zero gates, init notes, accepted
problems),
``records`` (what was measured), ``report`` (:class:`InitCheckReport`, rendered by
``_render``), ``suggest`` (a policy that fixes what was found), ``metrics`` (the check as
HParams metrics), ``lsuv`` and ``lightning`` (the Trainer side).

Example:
    >>> import torch
    >>> from lightning_init.check import check_init
    >>> check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)).ok
    True
"""

from __future__ import annotations

from lightning_init.check.lightning import (
    check_lightning_module,
    publish_check_report,
    raise_or_warn,
)
from lightning_init.check.lsuv import LSUVLayer, LSUVReport, lsuv_init
from lightning_init.check.options import CheckOptionError, CheckOptions
from lightning_init.check.report import (
    CheckProblem,
    InitCheckReport,
    LayerRecord,
    ParameterRecord,
)
from lightning_init.check.run import check_init
from lightning_init.errors import InitCheckError

__all__ = [
    "CheckOptionError",
    "CheckOptions",
    "CheckProblem",
    "InitCheckError",
    "InitCheckReport",
    "LSUVLayer",
    "LSUVReport",
    "LayerRecord",
    "ParameterRecord",
    "check_init",
    "check_lightning_module",
    "lsuv_init",
    "publish_check_report",
    "raise_or_warn",
]
