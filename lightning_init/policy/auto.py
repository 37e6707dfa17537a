"""An init policy built from a model's anatomy and one sample pass (``policy: "auto"``).

:func:`auto_rules` reads the model's :class:`~lightning_init.anatomy.Anatomy` (one traced pass:
what feeds each weight layer and what reads its output, by data flow, not by name) and gives
each part the init its role calls for (:mod:`lightning_init.policy._auto_build`):

- a weight layer gets the gain of the activation its output goes into (He et al. 2015,
  arXiv:1502.01852, section 2.2: ``std = gain / sqrt(fan_in)``); one whose output goes straight
  into a BatchNorm keeps the model's own values: the norm divides its scale out, so the
  forward pass does not constrain it, and the scale sets only the optimizer's step relative to
  the weight (under Adam about ``lr / std``), the model's own choice; where those values are
  unusable (all equal, not finite, flagged by a check) it is drawn over ``fan_out``
  (torchvision's ResNet);
- the layers that close a residual branch (their output is what the add receives) are scaled
  by ``1 / sqrt(n_branches)``, the number of branches added to that stream (Radford et al.
  2019, GPT-2, section 2.3; Megatron-LM), and, in a branch whose scale a norm sets (pre-norm,
  post-norm, sandwich, or a LayerNorm inside), by ``stream_rms``, the stream's rms measured
  where the first such branch leaves it: the branch starts at the scale of the stream it adds
  to (the layers inside keep the norm's unit scale); where only a norm reads the sum (post-norm,
  ``norm(x + f(x))``) they start at zero, so each block starts as the identity (Fixup, ReZero),
  except in a branch that reads another stream (cross-attention) and in one that mixes positions
  (an attention call's queries or keys made inside it), drawn at DeepNet's
  ``beta = (8 N)^(-1/4)`` of ``1 / sqrt(fan_in)`` (Wang et al. 2022, arXiv:2203.00555) so that
  every position sees the others from step 0;
- the layers that make an attention's queries are also divided by ``attention_logit_rms``, the
  attention logits' measured std (at least 1), as T5 folds ``1 / sqrt(d_k)`` into its queries;
- the heads (the last weight layers before what the loss reads, through soft-capping and
  across several heads) give outputs of std ``head_gain = 0.5`` on the sample batch, a small
  readout as muP's (Yang et al. 2022, arXiv:2203.03466); a head tied to an embedding, whose
  std is also the tokens', gets ``max(0.5, sqrt(0.2 ln C))``, the most an initial loss within
  10% of ln(C) allows; the initial loss is then measured with ties in place (a tied
  embedding puts each token's own embedding into the stream) and ``head_gain`` lowered until
  it is within about 10% of ln(C). A regression output starts at a tenth of its target's
  rms. With ``prior=p`` the head's bias is ``ln(p / (1 - p))`` (Lin et al. 2017, Focal
  Loss);
- norms start at identity by their probed formula: weight 1 for ``w * x_hat``, 0 for Gemma's
  ``(1 + w) * x_hat``;
- deliberate zero-inits (a ``zero_init_last`` BatchNorm, a zero head, a zero branch closer:
  zeros on the loss's path) are kept;
- embeddings of the stream's width: the tied one's scale, else ``N(0, 1)``; LSTM/GRU: Xavier
  input weights, orthogonal hidden weights per gate, LSTM forget-gate bias 1;
  ``MultiheadAttention``'s packed input projection Xavier uniform.

The measured values (``head_input_rms``, ``stream_rms``, ``attention_logit_rms``, the corrected
``head_gain``) are policy variables, read on the model initialized by the policy (one deep
copy, or the model itself with ``in_place=True``; :mod:`lightning_init.policy._calibrate`), so
the YAML reproduces the init without the sample batch. Each rule comes with comments: its
role, what the anatomy found (evidence) and its source. Weight layers the sample pass never
called are left alone, and the YAML's last comment names them.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> rules = auto_rules(net, torch.randn(4, 8))
    >>> [rule.role for rule in rules.rules]
    ['output layer', 'followed by tanh']
    >>> from lightning_init import InitPolicy
    >>> InitPolicy.auto(net, torch.randn(4, 8)).name
    'auto'
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from torch import nn

from lightning_init.policy._auto_rules import AutoRule, AutoRules, build_rules
from lightning_init.policy.init_policy import InitPolicy

__all__ = ["AutoRule", "AutoRules", "auto_rules"]


def auto_rules(model: nn.Module, sample: Any, *, forward: Any = None,
               num_classes: int | None = None, prior: float | None = None,
               flagged: Collection[str] = (), in_place: bool = False) -> AutoRules:
    """The automatic policy's rules for ``model``, from its anatomy and one sample pass.

    Args:
        model: the model; left as it was (modes and RNG states restored, no gradient taken),
            unless ``in_place``.
        sample: one batch: a tensor (``model(sample)``), a tuple/list or a dict.
        forward: ``forward(model, sample)`` to call the model another way.
        num_classes: when the output layer is a C-class classifier head.
        prior: for a sigmoid head, the positive class's frequency: the head's bias starts at
            ``ln(prior / (1 - prior))``.
        flagged: qualified names of layers a check flagged: their all-zero weights are not
            kept as deliberate zero-inits.
        in_place: measure the policy's variables on ``model`` itself, not on a deep copy:
            its weights are overwritten by the policy's (for weights about to be replaced,
            as under ``InitCallback``; no copy of the model is made).

    Returns:
        The :class:`AutoRules` (``.policy()`` gives the :class:`~lightning_init.InitPolicy`).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
        ...                           torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 5))
        >>> rules = auto_rules(net, torch.randn(2, 3, 4, 4), num_classes=5)
        >>> [(rule.role, rule.layers) for rule in rules.rules]  # doctest: +NORMALIZE_WHITESPACE
        [('output layer (classifier head)', ('4',)),
         ('followed by BatchNorm, its own scale kept', ('0',)), ('normalization layer', ('1',))]
        >>> rules.rules[0].rule["weight"]
        {'init': 'normal', 'std': 'head_gain / (sqrt(fan_in) * head_input_rms)'}
        >>> auto_rules(net, torch.randn(2, 3, 4, 4), prior=0.01).rules[0].rule["bias"]
        {'init': 'constant', 'val': -4.59512}
    """
    return build_rules(model, sample, InitPolicy._parsed, forward=forward,
                       num_classes=num_classes, prior=prior, flagged=flagged,
                       in_place=in_place)
