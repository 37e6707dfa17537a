"""An init policy built from a model's structure and one sample pass (``policy: "auto"``).

:func:`auto_rules` runs the model once on a sample batch under ``torch.no_grad`` and records, in
call order, every weight layer (``Linear``, convolutions, Hugging Face ``Conv1D``) and every
activation (``nn.ReLU`` and friends, and functional calls such as ``F.relu`` or
``torch.tanh``). Each weight layer then gets the gain of the activation that actually follows
it (He et al. 2015, arXiv:1502.01852, section 2.2: ``std = gain / sqrt(fan_in)`` keeps the
second moment of the pre-activations constant). Around that:

- a layer whose output goes straight into a BatchNorm uses ``fan_out``, as torchvision's
  ResNet does (He et al. 2015, section 2.2, the backward-pass case);
- inside a normalized residual block (a repeated block holding a LayerNorm or RMSNorm) the
  norms set the scale, and what matters is the size of a branch next to the residual stream
  it adds to: each layer's std is multiplied by ``stream_rms``, the stream's rms measured at
  the first block's input. GPT-2's ``N(0, 0.02)`` next to its 0.02-scale embeddings is the
  same idea;
- residual output projections (``c_proj``, ``out_proj``, ``o_proj``, ``fc2``, ``down_proj``,
  ``linear2``, BERT's ``output.dense``... inside a repeated block) are further scaled by
  ``1 / sqrt(2 * n_blocks)`` (Radford et al. 2019, GPT-2, section 2.3; Shoeybi et al. 2019,
  Megatron-LM, arXiv:1909.08053); in a post-norm block (``norm(x + f(x))``: the block's last
  call is a norm) they start at zero, so each block starts as the
  identity (Fixup, ReZero), except a cross-attention's, which carries the encoder to the loss;
- attention query projections (``q``, ``q_proj``, ``query``...) are also divided by
  ``attention_logit_rms``, the attention logits' measured std (at least 1): logits of unit
  variance, the ``1 / sqrt(d_k)`` argument of Vaswani et al. 2017, which T5 leaves out of its
  attention and folds into its query init;
- the output layer (the last weight layer called, with no activation or norm after it) gives
  outputs of std ``head_gain = max(0.5, sqrt(0.2 ln C))`` on the sample batch: ``std =
  head_gain / (sqrt(fan_in) * head_input_rms)`` with the input's rms measured, so the initial
  loss starts within about 10% of ln(C) whatever the features' scale; an embedding tied to
  it shares that std, and the other input embeddings of the stream's width follow it
  (untied: ``N(0, 1)``, the unit-scale stream of Vaswani et al. 2017 and T5). With
  ``prior=p`` its bias is ``ln(p / (1 - p))`` (Lin et al. 2017, Focal Loss);
- normalization layers start at identity: weight 1, bias 0;
- LSTM/GRU: Xavier input weights, orthogonal hidden weights per gate (Saxe et al. 2014,
  arXiv:1312.6120), LSTM forget-gate bias 1 (Jozefowicz et al. 2015);
- ``MultiheadAttention``'s packed input projection is Xavier uniform, as PyTorch does.

The measured values (``head_input_rms``, ``stream_rms``, ``attention_logit_rms``) are policy
variables, read on the model initialized by the policy (one deep copy, or the model itself with
``in_place=True``; :mod:`lightning_init.policy._calibrate`), so the YAML reproduces the init
without the sample batch.

Each rule comes with a comment saying which role it answers and its source; :class:`AutoRules`
renders the policy as commented YAML. Weight layers the sample pass never called are left
alone, and the YAML's last comment names them.

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

from typing import Any

from torch import nn

from lightning_init.policy._auto_rules import AutoRule, AutoRules, build_rules
from lightning_init.policy.init_policy import InitPolicy

__all__ = ["AutoRule", "AutoRules", "auto_rules"]


def auto_rules(model: nn.Module, sample: Any, *, forward: Any = None,
               num_classes: int | None = None, prior: float | None = None,
               in_place: bool = False) -> AutoRules:
    """The automatic policy's rules for ``model``, from its structure and one sample pass.

    Args:
        model: the model; left as it was (modes and RNG states restored, no gradient taken),
            unless ``in_place``.
        sample: one batch: a tensor (``model(sample)``), a tuple/list or a dict.
        forward: ``forward(model, sample)`` to call the model another way.
        num_classes: when the output layer is a C-class classifier head (it is named so).
        prior: for a sigmoid head, the positive class's frequency: the head's bias starts at
            ``ln(prior / (1 - prior))``.
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
        [('output layer (classifier head)', ('4',)), ('followed by BatchNorm, then relu', ('0',)),
         ('normalization layer', ('1',))]
        >>> rules.rules[0].rule["weight"]
        {'init': 'normal', 'std': 'head_gain / (sqrt(fan_in) * head_input_rms)'}
        >>> auto_rules(net, torch.randn(2, 3, 4, 4), prior=0.01).rules[0].rule["bias"]
        {'init': 'constant', 'val': -4.59512}
    """
    return build_rules(model, sample, InitPolicy.from_dict, forward=forward,
                       num_classes=num_classes, prior=prior, in_place=in_place)
