"""Where the statistics go: a TensorBoard ``SummaryWriter`` or any Lightning logger.

``SummaryWriter.add_scalar`` costs about 60 us per call (one event, one proto, one queue put); a
logging step has hundreds of scalars, so :class:`TensorBoardWriter` writes all the scalars of a
step as the values of ONE ``Summary`` event (TensorBoard reads each value as its own tag).
``add_scalars`` is avoided: it opens one extra event file per tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MetricsWriter", "TensorBoardWriter", "make_writer"]


class TensorBoardWriter:
    """Writes scalars, raw histograms and the custom-scalars layout to a ``SummaryWriter``.

    Example:
        >>> import tempfile
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as log_dir:
        ...     summary_writer = SummaryWriter(log_dir)
        ...     writer = TensorBoardWriter(summary_writer)
        ...     writer.scalars({"grad_norm/net.0.weight": 0.5, "grad_norm/net.1.weight": 0.25}, 3)
        ...     summary_writer.close()
        ...     from tensorboard.backend.event_processing.event_accumulator import (
        ...         EventAccumulator)
        ...     events = EventAccumulator(log_dir).Reload()
        ...     sorted(events.Tags()["scalars"]), events.Scalars("grad_norm/net.1.weight")[0].step
        (['grad_norm/net.0.weight', 'grad_norm/net.1.weight'], 3)
    """

    def __init__(self, summary_writer: Any) -> None:
        self.summary_writer = summary_writer
        self._summary_cls: Any = None
        try:
            from tensorboard.compat.proto.summary_pb2 import Summary

            if hasattr(summary_writer, "_get_file_writer"):
                self._summary_cls = Summary
        except ImportError:  # pragma: no cover - tensorboardX writer without tensorboard
            pass

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """All ``values`` at ``step``, as one event when the writer allows it."""
        if not values:
            return
        if self._summary_cls is None:
            for tag, value in values.items():
                self.summary_writer.add_scalar(tag, value, step)
            return
        summary = self._summary_cls(
            value=[
                self._summary_cls.Value(tag=tag, simple_value=float(value))
                for tag, value in values.items()
            ]
        )
        self.summary_writer._get_file_writer().add_summary(summary, step)

    def histogram(
        self,
        tag: str,
        moments: Sequence[float],
        bucket_limits: Sequence[float],
        bucket_counts: Sequence[float],
        step: int,
    ) -> None:
        """One histogram from ``[min, max, num, sum, sum_squares]`` and the buckets."""
        low, high, num, total, total_sq = moments
        self.summary_writer.add_histogram_raw(
            tag, low, high, num, total, total_sq, list(bucket_limits), list(bucket_counts),
            global_step=step,
        )

    def layout(self, layout: Mapping[str, Any]) -> None:
        """The custom-scalars layout (written once per writer by the caller)."""
        self.summary_writer.add_custom_scalars(dict(layout))


class MetricsWriter:
    """Scalars through ``logger.log_metrics(metrics, step)``; histograms are skipped.

    Example:
        >>> class Logger:
        ...     def log_metrics(self, metrics, step):
        ...         print(step, metrics)
        >>> MetricsWriter(Logger()).scalars({"grad_norm/w": 0.5}, 2)
        2 {'grad_norm/w': 0.5}
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """All ``values`` at ``step`` in one ``log_metrics`` call."""
        if values:
            self.logger.log_metrics(dict(values), step)

    def histogram(self, *args: Any, **kwargs: Any) -> None:
        """Histograms need TensorBoard: nothing is written."""

    def layout(self, layout: Mapping[str, Any]) -> None:
        """Layouts need TensorBoard: nothing is written."""


def make_writer(logger: Any) -> TensorBoardWriter | MetricsWriter:
    """The writer for a Lightning logger: TensorBoard when its experiment can take raw
    histograms (a ``SummaryWriter``), otherwise its ``log_metrics``.

    Example:
        >>> class Logger:
        ...     experiment = object()
        ...     def log_metrics(self, metrics, step): ...
        >>> type(make_writer(Logger())).__name__
        'MetricsWriter'
    """
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_histogram_raw") and hasattr(experiment, "add_custom_scalars"):
        return TensorBoardWriter(experiment)
    return MetricsWriter(logger)
