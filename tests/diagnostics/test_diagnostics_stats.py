"""The batched statistics behind the diagnostics, against plain torch on each tensor."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_init.diagnostics._stats import (
    ABSMAX,
    EXACT_STD,
    EXACT_STD_MAX_NUMEL,
    GROUP_MAX_NUMEL,
    NORM,
    SAMPLE_RUN,
    SUM,
    TensorBatch,
    _sample_layout,
    moments_from_sums,
    sparse_histograms,
    sparse_stats,
)
from lightning_init.runtime.sparse import coalesced


def _model_like_tensors() -> list[torch.Tensor]:
    """Groups of equal size, singletons, a tensor past GROUP_MAX_NUMEL, mixed dtypes, a view."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return [
        randn(64, 32) * 0.1 + 0.01,
        randn(32),
        randn(32, 64),  # same numel as the first: one group
        randn(32).abs() + 1.0,
        randn(7),  # singleton group
        randn(GROUP_MAX_NUMEL + 5) * 0.02,  # read in place, one by one
        randn(16, 8).to(torch.bfloat16),
        randn(10, 20).double(),
        randn(20, 10).t(),  # not contiguous
        torch.full((5,), 3.0),  # constant: std exactly 0
    ]


def test_stats_match_torch_per_tensor_in_the_given_order() -> None:
    tensors = _model_like_tensors()
    stats = TensorBatch(tensors).stats(tensors)
    assert stats.shape == (len(tensors), 4) and stats.dtype == torch.float32
    for tensor, row in zip(tensors, stats.tolist(), strict=True):
        values = tensor.double()
        assert row[NORM] == pytest.approx(float(values.norm()), rel=1e-4)  # float32 sums
        assert row[SUM] == pytest.approx(float(values.sum()), rel=1e-4, abs=1e-3)
        assert row[ABSMAX] == pytest.approx(float(values.abs().max()), rel=1e-6)
        mean, std = moments_from_sums(row[NORM], row[SUM], tensor.numel(), row[EXACT_STD])
        assert mean == pytest.approx(float(values.mean()), rel=1e-4, abs=1e-6)
        assert std == pytest.approx(float(values.std()), rel=1e-4, abs=1e-6)
        assert math.isnan(row[EXACT_STD]) == (tensor.numel() > EXACT_STD_MAX_NUMEL)
    assert stats[-1, EXACT_STD] == 0.0  # the constant tensor: no cancellation noise


def test_stats_read_the_current_values_at_every_call() -> None:
    weight = torch.ones(3, 3)
    batch = TensorBatch([weight, torch.zeros(9)])
    assert batch.stats([weight, torch.zeros(9)])[0, SUM] == 9.0
    weight.mul_(2)
    assert batch.stats([weight, torch.zeros(9)])[0, SUM] == 18.0


def test_change_norms_are_the_norms_of_the_updates() -> None:
    tensors = _model_like_tensors()
    before = [tensor.clone() for tensor in tensors]
    batch = TensorBatch(tensors, keep_copy=True)
    batch.stats(tensors)
    generator = torch.Generator().manual_seed(1)
    for tensor in tensors:
        tensor.add_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * 1e-3)
    norms = batch.change_norms(tensors).tolist()
    for old, new, norm in zip(before, tensors, norms, strict=True):
        expected = float((new.double() - old.double()).norm())
        assert norm == pytest.approx(expected, rel=1e-3)
    with pytest.raises(RuntimeError, match="keep_copy"):
        TensorBatch(tensors).change_norms(tensors)


def test_sampled_change_norms_estimate_the_update_ratio() -> None:
    """Large tensors keep a 16384-element sample: their change relative to their norm is the
    sample's, within a few percent for dense updates (iid, or scaled per row as Adam's are);
    small tensors stay exact."""
    generator = torch.Generator().manual_seed(0)
    row_scales = torch.logspace(-2, 1, 512)[:, None]
    weight = torch.randn(512, 512, generator=generator) * row_scales  # rows of unequal size
    tensors = [
        torch.randn(512, 512, generator=generator),  # 262144 elements: sampled
        weight,
        torch.randn(300, 300, generator=generator).double(),  # sampled, float64
        torch.randn(64, 64, generator=generator),  # grouped: exact
    ]
    before = [tensor.clone() for tensor in tensors]
    batch = TensorBatch(tensors, keep_copy=True, copy_max_numel=16384)
    stats = batch.stats(tensors)
    tensors[0].add_(torch.randn(512, 512, generator=generator) * 1e-3)
    tensors[1].add_(torch.randn(512, 512, generator=generator) * row_scales * 1e-3)
    tensors[2].add_(torch.randn(300, 300, generator=generator).double() * 1e-2)
    tensors[3].add_(torch.randn(64, 64, generator=generator) * 1e-3)
    estimated = batch.change_norms(tensors).double()
    exact = torch.stack(
        [(new.double() - old.double()).norm() for old, new in zip(before, tensors, strict=True)]
    )
    ratio_estimated, ratio_exact = estimated / stats[:, NORM].double(), exact / stats[:, NORM]
    relative_error = ((ratio_estimated - ratio_exact) / ratio_exact).abs().tolist()
    # 16384 iid samples: each norm is off by about 1/sqrt(2 * 16384) = 0.55%, the ratio by
    # 0.8% (1.46% measured over 200 seeds with 4096 samples, against 1.56% in theory).
    assert max(relative_error[:3]) < 0.04, relative_error
    assert relative_error[3] < 1e-5  # copied whole
    # The same runs are read before and after: an unchanged tensor has no change at all.
    batch.stats(tensors)
    assert batch.change_norms(tensors).abs().max() == 0.0


def test_copy_whole_keeps_sparse_updates_exact() -> None:
    """An embedding table's update touches a few rows; a sample would miss them."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(5000, 64, generator=generator)
    before = table.clone()
    sampled = TensorBatch([table], keep_copy=True, copy_max_numel=4096)
    whole = TensorBatch([table], keep_copy=True, copy_max_numel=4096, copy_whole=[True])
    sampled.stats([table])
    whole.stats([table])
    table[[3, 1200, 4999]] += 0.5  # 3 rows of 5000
    exact = float((table - before).norm())
    assert whole.change_norms([table]).item() == pytest.approx(exact, rel=1e-5)
    missed = sampled.change_norms([table]).item()
    assert abs(missed - exact) > 0.5 * exact  # what copy_whole is for


def test_a_sample_of_zeros_scales_by_size() -> None:
    """Where the sampled runs of a tensor are all 0, the change is scaled by sqrt(numel / n)."""
    numel, samples = 200_000, 4096
    stride, offset = _sample_layout(numel, samples // SAMPLE_RUN, SAMPLE_RUN)
    tensor = torch.ones(numel)
    runs = tensor.as_strided((samples // SAMPLE_RUN, SAMPLE_RUN), (stride, 1), offset)
    runs.zero_()  # the sample sees zeros only, the tensor does not
    batch = TensorBatch([tensor], keep_copy=True, copy_max_numel=samples)
    batch.stats([tensor])
    tensor.add_(torch.randn(numel, generator=torch.Generator().manual_seed(0)) * 1e-3)
    exact = 1e-3 * math.sqrt(numel)  # iid: the change norm of the whole tensor
    assert batch.change_norms([tensor]).item() == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("numel", [65_537, 100_000, 262_144, 1_000_003, 4 * 2**20])
@pytest.mark.parametrize("samples", [256, 4096, 16_384, 60_000])
def test_sample_runs_are_inside_the_tensor_and_do_not_overlap(numel: int, samples: int) -> None:
    run = min(SAMPLE_RUN, samples)
    count = samples // run
    stride, offset = _sample_layout(numel, count, run)
    assert offset >= 0 and offset + stride * (count - 1) + run <= numel
    assert count == 1 or stride >= run
    assert stride % 2 == 1 or stride == run  # odd: the runs start in every column
    assert _sample_layout(numel, count, run) == (stride, offset)  # fixed


def test_histograms_match_histc_per_tensor() -> None:
    tensors = [t for t in _model_like_tensors() if t.numel() <= 4096]
    tensors[0][0, 0] = float("nan")  # counted as 0, as documented
    batch = TensorBatch(tensors)
    batch.stats(tensors)
    rows = batch.histograms(tensors, bins=16, max_samples=1 << 20)
    for tensor, row in zip(tensors, rows, strict=True):
        values = torch.nan_to_num(tensor.float().reshape(-1), nan=0.0)
        low, high, num, total, total_sq = row[:5].tolist()
        assert (low, high) == (float(values.min()), float(values.max()))
        assert num == values.numel()
        assert total == pytest.approx(float(values.sum()), abs=1e-3)
        assert total_sq == pytest.approx(float(values.dot(values)), rel=1e-5)
        edges, counts = row[5:21], row[21:]
        expected_edges = torch.linspace(low, high, 17)[1:] if low < high else None
        if expected_edges is not None:
            assert torch.allclose(edges, expected_edges, rtol=1e-5, atol=1e-6)
        assert counts.sum() == values.numel()
        # Same bins as histc, up to values that fall on an edge after rounding.
        assert (counts - torch.histc(values, bins=16)).abs().sum() <= 2


def test_large_tensors_are_histogrammed_on_a_fixed_subsample() -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(100_000, generator=generator), torch.rand(100_000, generator=generator)]
    batch = TensorBatch(tensors)
    batch.stats(tensors)
    first = batch.histograms(tensors, bins=10, max_samples=5000)
    again = batch.histograms(tensors, bins=10, max_samples=5000)
    assert torch.equal(first, again)
    assert first[:, 2].tolist() == [5000.0, 5000.0]
    # The uniform tensor's subsample is close to uniform: about 500 per bin.
    counts = first[1, 15:]
    assert counts.min() > 400 and counts.max() < 600


def test_an_empty_tensor_is_refused() -> None:
    with pytest.raises(ValueError, match="tensor 1 is empty"):
        TensorBatch([torch.ones(2), torch.ones(0)])


def _sparse_gradients() -> list[torch.Tensor]:
    """Sparse tensors as backward makes them: an embedding's (hybrid, uncoalesced: a row looked
    up twice), a hybrid one with two sparse dimensions (uncoalesced too), one with two sparse
    dimensions only, a CSR matrix, one with no non-zero at all."""
    generator = torch.Generator().manual_seed(3)
    rows = torch.tensor([[5, 1, 5, 700]])
    values = torch.randn(4, 96, generator=generator)
    embedding = torch.sparse_coo_tensor(rows, values, (800, 96), check_invariants=True)
    two_dims = torch.sparse_coo_tensor(
        torch.tensor([[0, 3, 3], [7, 2, 9]]), torch.randn(3, generator=generator), (4, 10),
        check_invariants=True,
    )
    pairs = torch.tensor([[3, 39, 3, 0, 17], [49, 0, 49, 0, 25]])
    two_sparse_dims = torch.sparse_coo_tensor(
        pairs, torch.randn(5, 60, generator=generator), (40, 50, 60), check_invariants=True
    )
    csr = torch.randn(30, 20, generator=generator).relu().to_sparse_csr()
    empty = torch.sparse_coo_tensor(
        torch.zeros(1, 0, dtype=torch.long), torch.zeros(0, 8), (9, 8), check_invariants=True
    )
    return [embedding, two_sparse_dims, two_dims, csr, empty]


_CSR_IS_BETA = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


@_CSR_IS_BETA
def test_sparse_stats_equal_the_dense_equivalents() -> None:
    sparse = _sparse_gradients()
    dense = [tensor.to_dense() for tensor in sparse]
    measured = sparse_stats([coalesced(tensor) for tensor in sparse])
    expected = TensorBatch(dense).stats(dense)
    for row, exact, tensor in zip(measured.tolist(), expected.tolist(), dense, strict=True):
        assert row[NORM] == pytest.approx(exact[NORM], rel=1e-6)
        assert row[SUM] == pytest.approx(exact[SUM], rel=1e-5, abs=1e-6)
        assert row[ABSMAX] == exact[ABSMAX]
        _, std = moments_from_sums(row[NORM], row[SUM], tensor.numel(), row[EXACT_STD])
        assert std == pytest.approx(float(tensor.std()), rel=1e-5)


@_CSR_IS_BETA
def test_sparse_histograms_sample_the_dense_equivalent_at_the_same_positions() -> None:
    # 800 x 96 = 76,800 and 40 x 50 x 60 = 120,000 elements: past max_samples, so the dense
    # tensors are histogrammed on a fixed sample of positions; the sparse ones must read the
    # same positions without being made dense (the smaller ones are histogrammed whole).
    sparse = _sparse_gradients()
    dense = [tensor.to_dense() for tensor in sparse]
    batch = TensorBatch(dense)
    batch.stats(dense)
    expected = batch.histograms(dense, bins=16, max_samples=4096)
    measured = sparse_histograms([coalesced(tensor) for tensor in sparse], 16, 4096)
    torch.testing.assert_close(measured, expected)
    # The samples hold the rows that were looked up, not just zeros.
    for row in (0, 1):
        assert measured[row, 2] == 4096 and measured[row, 1] > 0
