"""Issue 25, item 2: the check's ``training_step`` leaves every parameter as it was."""

from __future__ import annotations

import copy
import logging

import lightning as L
import torch
from _models import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import InitCallback, check_init


class _StudentTeacher(L.LightningModule):
    """A student trained by SGD and an EMA teacher updated in place inside training_step."""

    def __init__(self):
        super().__init__()
        self.student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        with torch.no_grad():
            for param in self.teacher.parameters():
                param.mul_(-1.5)

    def training_step(self, batch, batch_idx):
        x, y = batch
        with torch.no_grad():  # the usual EMA update, three ways of writing in place
            first, second = self.teacher[0], self.teacher[2]
            first.weight.mul_(0.5).add_(self.student[0].weight, alpha=0.5)
            first.bias.data.copy_(first.bias * 0.25)
            torch._foreach_lerp_(list(second.parameters()), list(self.student[2].parameters()),
                                 0.5)
        logits = self.student(x)
        target = self.teacher(x).softmax(-1)
        return nn.functional.cross_entropy(logits, y) + nn.functional.mse_loss(
            logits.softmax(-1), target)

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1)


def _fit(tmp_path, check):
    torch.manual_seed(0)
    model = _StudentTeacher()
    data = TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,)))
    callback = InitCallback(None, check=check, diagnostics=False)
    quiet_trainer(tmp_path, max_steps=3, callbacks=[callback]).fit(
        model, DataLoader(data, batch_size=8))
    return model.state_dict()


def test_item2_check_leaves_an_ema_teacher_bit_identical(tmp_path, caplog):
    without = _fit(tmp_path / "off", check=False)
    with caplog.at_level(logging.INFO, logger="lightning_init"):
        with_check = _fit(tmp_path / "on", check=True)
    for name, tensor in without.items():
        assert torch.equal(with_check[name], tensor), name
    said = [r.getMessage() for r in caplog.records if "in place" in r.getMessage()]
    assert len(said) == 1, said
    for name in ("teacher.0.weight", "teacher.0.bias", "teacher.2.weight", "teacher.2.bias"):
        assert name in said[0]
    assert "restored" in said[0]


def test_item2_check_init_restores_a_forward_that_writes_its_weights():
    class SelfNormalizing(nn.Linear):
        def forward(self, x):
            with torch.no_grad():
                self.weight.div_(self.weight.norm())
            return super().forward(x)

    net = nn.Sequential(SelfNormalizing(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    check_init(net, torch.randn(16, 4))
    for name, tensor in before.items():
        assert torch.equal(net.state_dict()[name], tensor), name


def test_item2_a_write_the_copy_cannot_see_is_named_in_a_warning_line(caplog):
    class WritesBehindTorch(nn.Linear):
        def forward(self, x):
            self.weight.detach().numpy()[0, 0] = 7.0  # no operator: nothing to copy first
            torch.autograd.graph.increment_version(self.weight)  # as a kernel would
            return super().forward(x)

    net = nn.Sequential(WritesBehindTorch(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with caplog.at_level(logging.INFO, logger="lightning_init"):
        check_init(net, torch.randn(16, 4))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING
              and "could not be undone" in r.getMessage()]
    assert len(warned) == 1 and "0.weight" in warned[0].getMessage()
    assert "check=False" in warned[0].getMessage()


def test_item2_a_compiled_module_still_compiles_after_the_check():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = torch.compile(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
                        backend="eager")
    check_init(net, torch.randn(16, 4))
    assert not counters["frames"]  # the check ran it eagerly
    net(torch.randn(16, 4))
    assert counters["frames"]["ok"] == 1  # training compiles it (the mode left no skip mark)
    torch._dynamo.reset()
