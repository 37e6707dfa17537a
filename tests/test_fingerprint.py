"""weights_fingerprint: bit-exact over dense and sparse tensors, and a fit with a sparse buffer."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import weights_fingerprint
from lightning_init.callback import InitCallback

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
from _models import make_policy, quiet_trainer

_EDGES = torch.tensor([[0, 1, 2, 3, 1], [1, 2, 3, 0, 1]])


def _coo(indices: torch.Tensor, values: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return torch.sparse_coo_tensor(indices, values, size, check_invariants=True)


def _with_buffer(buffer: torch.Tensor) -> nn.Module:
    module = nn.Module()
    module.register_buffer("adj", buffer)
    return module


def test_dense_fingerprint_is_unchanged():
    module = nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.copy_(torch.arange(6.0).view(2, 3) / 7)
        module.bias.copy_(torch.tensor([-1.5, 2.25]))
    module.register_buffer("steps", torch.tensor([3, 4]))
    assert weights_fingerprint(module) == "637ccafb45038e6d"
    assert weights_fingerprint(module, include_buffers=False) == "aff3823b393fddb9"


def test_sparse_buffer_fingerprint_is_bit_exact():
    adj = _coo(_EDGES, torch.tensor([1.0, 0.5, 0.25, 2.0, -1.0]), (4, 4))
    base = weights_fingerprint(_with_buffer(adj))
    assert weights_fingerprint(_with_buffer(adj.clone())) == base
    assert weights_fingerprint(_with_buffer(adj.coalesce())) == base
    nudged = adj.coalesce()
    with torch.no_grad():
        nudged.values()[2] = torch.nextafter(nudged.values()[2], torch.tensor(1.0))
    assert weights_fingerprint(_with_buffer(nudged)) != base
    moved = _coo(_EDGES.flip(0), adj.coalesce().values(), (4, 4))
    assert weights_fingerprint(_with_buffer(moved)) != base
    assert weights_fingerprint(_with_buffer(adj.to_dense())) != base


def test_duplicate_sparse_entries_count_as_their_sum():
    split = _coo(torch.tensor([[0, 0, 2]]), torch.tensor([1.0, 2.0, 4.0]), (3,))
    summed = _coo(torch.tensor([[0, 2]]), torch.tensor([3.0, 4.0]), (3,))
    assert weights_fingerprint(_with_buffer(split)) == weights_fingerprint(_with_buffer(summed))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["csr", "hybrid", "empty"])
def test_other_sparse_layouts_are_fingerprinted(layout):
    dense = torch.tensor([[0.0, 1.5], [2.0, 0.0]])
    if layout == "csr":
        tensor = dense.to_sparse_csr()
    elif layout == "hybrid":
        tensor = torch.ones(3, 2, 4).to_sparse(sparse_dim=1)
    else:
        no_edges = torch.zeros(2, 0, dtype=torch.long)
        tensor = _coo(no_edges, torch.zeros(0), (2, 2))
    first = weights_fingerprint(_with_buffer(tensor))
    assert first == weights_fingerprint(_with_buffer(tensor.clone()))
    assert len(first) == 16


class _GraphNet(L.LightningModule):
    """A one-layer graph network: node features mixed by a sparse adjacency buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("adj", _coo(_EDGES, torch.ones(5), (4, 4)))
        self.lin = nn.Linear(3, 2)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.sparse.mm(self.adj, nodes))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch[0][0]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(8, 4, 3)), batch_size=1)


@pytest.mark.parametrize("extras", ["off", "default"])
def test_fit_with_a_sparse_buffer_completes(tmp_path, extras):
    options = {"check": False, "diagnostics": False} if extras == "off" else {}
    model = _GraphNet()
    callback = InitCallback(policy=make_policy(), **options)
    trainer = quiet_trainer(tmp_path, callbacks=[callback])
    trainer.fit(model)
    assert trainer.global_step == 2
    state = callback.state_dict()
    assert state["applied"] and state["fingerprint"] == weights_fingerprint(model)
    assert model.adj.layout is torch.sparse_coo
