"""``InitPolicy.auto`` and ``check_init`` on hand-written PyTorch models (no ``transformers``),
issue 23: the zoo of ``tests/helpers/zoo_torch.py``."""

from __future__ import annotations

import torch
from zoo_torch import CASES, make, multitask_loss

from lightning_init import InitPolicy, check_init

_BY_NAME = {case.name: case for case in CASES}


def test_a_multi_task_loss_is_judged_by_its_cross_entropy_term() -> None:
    # cross-entropy + a regression's MSE: the sum is no cross-entropy, and ln(C) bounds only
    # the classification term (before: "initial loss 2.03 is 1.9x ln(3)" after auto's init).
    case = _BY_NAME["multitask"]
    model, inputs, target = make(case, 0)
    InitPolicy.auto(model, inputs).apply(model)
    report = check_init(model, inputs, loss_fn=multitask_loss, target=target)
    assert report.ok, report.problems
    assert report.num_classes == 3
    assert any("cross-entropy term alone" in note for note in report.notes)


def test_a_multi_task_loss_still_flags_hot_logits() -> None:
    model, inputs, target = make(_BY_NAME["multitask"], 0)
    with torch.no_grad():
        model.cls.weight.mul_(30)
    report = check_init(model, inputs, loss_fn=multitask_loss, target=target)
    assert [problem.kind for problem in report.problems] == ["loss"]
