"""Where the statistics go: a TensorBoard event file of their own, or any Lightning logger.

Writing through ``SummaryWriter`` costs more than computing the statistics: each event is
checksummed by TensorBoard's pure-Python CRC-32C, in the writer's thread, holding the GIL, and
queued one by one (a full queue blocks the training thread). So :class:`TensorBoardWriter`
writes ONE event per logging step (every scalar and histogram as a value of one ``Summary``),
synchronously, into its own event file, checksummed by ``google_crc32c`` (C). Building one
``Summary.Value`` message per scalar in Python is slow too: the values' bytes are encoded
directly (:class:`_ScalarEncoder` and :func:`_encode_histogram`), a few lines of protobuf wire
format that TensorBoard's own reader reads back in the tests.

The file lives in the subdirectory ``diagnostics`` of the logger's directory: TensorBoard shows
it as its own run (``version_0/diagnostics``). In the logger's own directory it would be the
newest of two files written at once, and TensorBoard (without ``--reload_multifile``) polls only
the newest file of a run: the loss curve would stop updating live.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from itertools import count
from typing import Any, BinaryIO

import google_crc32c
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

from lightning_init.diagnostics._alerts import DiagnosticsWarning
from lightning_init.diagnostics._charts import Charts

__all__ = [
    "DIAGNOSTICS_SUBDIR",
    "EventFile",
    "LoggerWriters",
    "MetricsWriter",
    "TensorBoardWriter",
    "make_writer",
]

DIAGNOSTICS_SUBDIR = "diagnostics"
_file_numbers = count()


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


class _ScalarEncoder:
    """The serialized ``Summary.value`` entries of scalars, with each tag's bytes cached.

    A scalar is ``Value {tag = 1 (string); simple_value = 2 (float)}``, repeated as field 1 of
    ``Summary``; serialized messages concatenate into one message with all their values.

    Example:
        >>> encoded = _ScalarEncoder().encode({"loss": 0.5})
        >>> summary = Summary(value=[Summary.Value(tag="loss", simple_value=0.5)])
        >>> encoded == summary.SerializeToString()
        True
    """

    _float = struct.Struct("<f").pack

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}

    def _prefix(self, tag: str) -> bytes:
        tag_bytes = tag.encode()
        value = b"\x0a" + _varint(len(tag_bytes)) + tag_bytes + b"\x15"  # + 4 float bytes
        prefix = self._prefixes[tag] = b"\x0a" + _varint(len(value) + 4) + value
        return prefix

    def encode(self, values: Mapping[str, float]) -> bytes:
        prefixes, pack = self._prefixes, self._float
        return b"".join(
            [(prefixes.get(tag) or self._prefix(tag)) + pack(value)
             for tag, value in values.items()]
        )


def _encode_histogram(
    tag: str, moments: Sequence[float], bucket_limits: Sequence[float],
    bucket_counts: Sequence[float],
) -> bytes:
    """A serialized ``Summary`` holding one ``Value {tag = 1; histo = 5}``.

    ``HistogramProto`` is ``min = 1, max = 2, num = 3, sum = 4, sum_squares = 5`` (doubles) and
    ``bucket_limit = 6, bucket = 7`` (packed doubles).

    Example:
        >>> encoded = _encode_histogram("w", [0.0, 2.0, 4.0, 4.0, 6.0], [1.0, 2.0], [1.0, 3.0])
        >>> value = Summary.FromString(encoded).value[0]
        >>> value.tag, value.histo.max, list(value.histo.bucket_limit), list(value.histo.bucket)
        ('w', 2.0, [1.0, 2.0], [1.0, 3.0])
    """
    n_limits, n_counts = len(bucket_limits), len(bucket_counts)
    histo = (
        struct.pack("<BdBdBdBdBd", 0x09, moments[0], 0x11, moments[1], 0x19, moments[2],
                    0x21, moments[3], 0x29, moments[4])
        + b"\x32" + _varint(8 * n_limits) + struct.pack(f"<{n_limits}d", *bucket_limits)
        + b"\x3a" + _varint(8 * n_counts) + struct.pack(f"<{n_counts}d", *bucket_counts)
    )
    tag_bytes = tag.encode()
    value = b"\x0a" + _varint(len(tag_bytes)) + tag_bytes + b"\x2a" + _varint(len(histo)) + histo
    return b"\x0a" + _varint(len(value)) + value


def _masked_crc32c(data: bytes) -> bytes:
    """The TFRecord checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class EventFile:
    """A TensorBoard event file (TFRecord framing), written synchronously.

    Example:
        >>> import tempfile
        >>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        >>> with tempfile.TemporaryDirectory() as log_dir:
        ...     with EventFile(log_dir) as event_file:
        ...         summary = Summary(value=[Summary.Value(tag="loss", simple_value=0.5)])
        ...         event_file.write(summary, step=3)
        ...     events = EventAccumulator(log_dir).Reload()
        ...     [(s.step, s.value) for s in events.Scalars("loss")]
        [(3, 0.5)]
    """

    def __init__(self, log_dir: str, suffix: str = ".lightning_init") -> None:
        os.makedirs(log_dir, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_file_numbers)}{suffix}"
        )
        self.path = os.path.join(log_dir, name)
        self._file: BinaryIO | None = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._record(Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def _record(self, event: Event | bytes) -> None:
        if self._file is None:
            raise ValueError(f"event file {self.path} is closed")
        data = event if isinstance(event, bytes) else event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self._file.write(header + _masked_crc32c(header) + data + _masked_crc32c(data))

    def write(self, summary: Summary | bytes, step: int) -> None:
        """One event holding ``summary`` (a message or its serialized bytes) at ``step``."""
        if isinstance(summary, Summary):
            summary = summary.SerializeToString()
        # Event {wall_time = 1; step = 2; summary = 5}: the summary appended as field 5.
        head = Event(wall_time=time.time(), step=step).SerializeToString()
        self._record(head + b"\x2a" + _varint(len(summary)) + summary)

    def flush(self) -> None:
        """Hand what was written to the operating system (TensorBoard can read it)."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close; idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TensorBoardWriter:
    """Scalars, raw histograms and the Custom Scalars charts, one event per logging step.

    Args:
        log_dir: the directory of the event file (created if missing).

    Example:
        >>> import os, tempfile
        >>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        >>> with tempfile.TemporaryDirectory() as log_dir:
        ...     writer = TensorBoardWriter(log_dir)
        ...     writer.add_scalars({"grad_norm/net.0.weight": 0.5, "grad_norm/net.1.weight": 0.25})
        ...     writer.add_histogram("weight_hist/net.0.weight", [0, 2, 4, 4, 6], [1, 2], [1, 3])
        ...     writer.write(step=3)
        ...     writer.close()
        ...     events = EventAccumulator(log_dir).Reload()
        ...     histograms = events.Histograms("weight_hist/net.0.weight")
        ...     sorted(events.Tags()["scalars"]), histograms[0].step
        (['grad_norm/net.0.weight', 'grad_norm/net.1.weight'], 3)
    """

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._event_file: EventFile | None = None
        self._pieces: list[bytes] = []  # serialized Summary messages of the step being built
        self._scalars = _ScalarEncoder()
        self._charts: Charts | None = None

    def _file(self) -> EventFile:
        if self._event_file is None:
            self._event_file = EventFile(self.log_dir)
        return self._event_file

    def add_scalars(self, values: Mapping[str, float]) -> None:
        """Scalars of the step being built (and the log10 values the charts draw)."""
        self._pieces.append(self._scalars.encode(values))
        if self._charts is not None:
            self._pieces.append(self._scalars.encode(self._charts.log10_values(values)))

    def add_histogram(
        self,
        tag: str,
        moments: Sequence[float],
        bucket_limits: Sequence[float],
        bucket_counts: Sequence[float],
    ) -> None:
        """A histogram of the step being built, from ``[min, max, num, sum, sum_squares]``."""
        self._pieces.append(_encode_histogram(tag, moments, bucket_limits, bucket_counts))

    def write(self, step: int) -> None:
        """Everything added since the last write, as one event at ``step``; then flush."""
        pieces, self._pieces = self._pieces, []
        if pieces:
            event_file = self._file()
            event_file.write(b"".join(pieces), step)
            event_file.flush()

    def charts(self, charts: Charts) -> None:
        """Write the Custom Scalars layout; from now on :meth:`add_scalars` adds the log10
        values its charts draw (called once per writer by the caller)."""
        self._charts = charts
        self._file().write(charts.summary(), 0)

    def close(self) -> None:
        """Close the event file; a later write opens a new one. Idempotent."""
        if self._event_file is not None:
            self._event_file.close()
            self._event_file = None


class MetricsWriter:
    """Scalars through ``logger.log_metrics(metrics, step)``; histograms are skipped.

    Example:
        >>> class Logger:
        ...     def log_metrics(self, metrics, step):
        ...         print(step, metrics)
        >>> writer = MetricsWriter(Logger())
        >>> writer.add_scalars({"grad_norm/w": 0.5})
        >>> writer.write(step=2)
        2 {'grad_norm/w': 0.5}
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self._values: dict[str, float] = {}

    def add_scalars(self, values: Mapping[str, float]) -> None:
        """Scalars of the step being built."""
        self._values.update(values)

    def add_histogram(self, *args: Any, **kwargs: Any) -> None:
        """Histograms need TensorBoard: nothing is written."""

    def write(self, step: int) -> None:
        """All the step's scalars in one ``log_metrics`` call."""
        values, self._values = self._values, {}
        if values:
            self.logger.log_metrics(values, step)

    def charts(self, charts: Charts) -> None:
        """Charts need TensorBoard: nothing is written."""

    def close(self) -> None:
        """Nothing to close: the logger owns its files."""


def make_writer(logger: Any) -> TensorBoardWriter | MetricsWriter:
    """The writer for a Lightning logger: an event file in ``<log dir>/diagnostics`` when its
    experiment is a TensorBoard ``SummaryWriter``, otherwise its ``log_metrics``.

    Example:
        >>> class Logger:
        ...     experiment = object()
        ...     def log_metrics(self, metrics, step): ...
        >>> type(make_writer(Logger())).__name__
        'MetricsWriter'
    """
    experiment = getattr(logger, "experiment", None)
    get_logdir = getattr(experiment, "get_logdir", None)
    if callable(get_logdir) and hasattr(experiment, "add_histogram_raw"):
        return TensorBoardWriter(os.path.join(get_logdir(), DIAGNOSTICS_SUBDIR))
    return MetricsWriter(logger)


class LoggerWriters:
    """One writer per Lightning logger, made at its first write; the charts given once each.

    A logger whose writer fails gets a :class:`DiagnosticsWarning` and nothing more: a logging
    failure never stops training.

    Example:
        >>> class Logger:
        ...     def log_metrics(self, metrics, step):
        ...         print(step, metrics)
        >>> LoggerWriters().write([Logger()], 4, {"grad_norm/w": 0.5}, [], Charts([], []))
        4 {'grad_norm/w': 0.5}
    """

    def __init__(self) -> None:
        self._writers: dict[int, TensorBoardWriter | MetricsWriter] = {}
        self._charted: set[int] = set()
        self._broken: set[int] = set()

    def write(
        self,
        loggers: Iterable[Any],
        step: int,
        scalars: Mapping[str, float],
        histograms: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
        charts: Charts,
    ) -> None:
        """The step's scalars and histograms to every logger (and the charts, the first time)."""
        for logger in loggers:
            key = id(logger)
            if key in self._broken:
                continue
            try:
                self._write_one(logger, step, scalars, histograms, charts)
            except Exception as error:  # a logging failure never stops training
                self._broken.add(key)
                warnings.warn(
                    f"lightning_init diagnostics could not write to {type(logger).__name__} at "
                    f"step {step} ({error!r}); this logger gets no more diagnostics.",
                    DiagnosticsWarning,
                    stacklevel=3,
                )

    def _write_one(
        self,
        logger: Any,
        step: int,
        scalars: Mapping[str, float],
        histograms: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]],
        charts: Charts,
    ) -> None:
        key = id(logger)
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = make_writer(logger)
        if key not in self._charted:
            self._charted.add(key)
            writer.charts(charts)
        writer.add_scalars(scalars)
        for tag, head, edges, counts in histograms:
            writer.add_histogram(tag, head, edges, counts)
        writer.write(step)

    def close(self) -> None:
        """Close every writer's file (a later write opens a new one); never raises."""
        for writer in self._writers.values():
            with contextlib.suppress(Exception):  # a broken file must not stop the teardown
                writer.close()
