"""Random-access byte windows over a built corpus, batched as a pure function of (seed, step).

Training batches come from a counter-based RNG (numpy Philox keyed by seed and step),
not from an iterator's position, so the batch of any step can be regenerated exactly
after a kill and resume: nothing but (seed, step) needs to be checkpointed.
Validation walks its split in order with windows whose targets do not overlap, so
bits per byte is measured once over (almost) every validation byte.

A window of seq_len is seq_len+1 bytes: inputs = w[:, :-1], targets = w[:, 1:].
Windows may span records and documents (documents are NUL-separated in the stream).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from memflax.data.corpus_files import CorpusError


class ByteCorpus:
  """The splits of a byte corpus as random-access streams.

  sources[split][i] is record i, {'bytes': uint8 [record_length]} (a split's last record
  may be shorter); num_bytes[split] is the stream length; documents[split] the names of
  its documents in stream order.
  """

  def __init__(self, sources: Mapping[str, Sequence], record_length: int,
               num_bytes: Mapping[str, int], documents: Mapping[str, Sequence[str]] | None = None,
               path: str | None = None, built: bool = False):
    self.sources = dict(sources)
    self.record_length = record_length
    self.num_bytes = dict(num_bytes)
    self.documents = {k: list(v) for k, v in (documents or {}).items()}
    self.path = path    # the dataset's directory
    self.built = built  # True when this call built it, False when an earlier build was reused

  @classmethod
  def from_builder(cls, builder, built: bool = False) -> ByteCorpus:
    meta = builder.info.metadata
    return cls(builder.as_data_source(), meta['record_length'], meta['num_bytes'],
               meta['documents'], path=str(builder.data_path), built=built)

  def read(self, split: str, start: int, length: int) -> np.ndarray:
    """Stream bytes [start, start+length) of `split` -> uint8 [length]."""
    return self.read_windows(split, np.array([start]), length)[0]

  def read_windows(self, split: str, starts: np.ndarray, length: int) -> np.ndarray:
    """Windows [s, s+length) for each s in starts [N] -> uint8 [N, length]."""
    starts = np.asarray(starts, np.int64)
    if len(starts) and (starts.min() < 0 or starts.max() + length > self.num_bytes[split]
                        or length < 1):
      raise IndexError(f'windows of {length} bytes at {starts.min()}..{starts.max()} fall '
                       f'outside the {split} split of {self.num_bytes[split]} bytes')
    firsts = starts // self.record_length
    lasts = (starts + length - 1) // self.record_length
    # One batched read: array_record starts a thread pool per call, which costs more
    # than reading a record.
    wanted = sorted({i for f, l in zip(firsts, lasts) for i in range(f, l + 1)})
    records = dict(zip(wanted, (r['bytes'] for r in self.sources[split].__getitems__(wanted))))
    out = np.empty((len(starts), length), np.uint8)
    for row, (s, f, l) in enumerate(zip(starts, firsts, lasts)):
      data = np.concatenate([records[i] for i in range(f, l + 1)])
      offset = s - f * self.record_length
      out[row] = data[offset:offset + length]
    return out

  def chunks(self, split: str, records_per_chunk: int = 256) -> Iterator[np.ndarray]:
    """The whole stream of `split` in order, as consecutive uint8 pieces."""
    source = self.sources[split]
    for i in range(0, len(source), records_per_chunk):
      records = source.__getitems__(list(range(i, min(i + records_per_chunk, len(source)))))
      yield np.concatenate([r['bytes'] for r in records])

  def check_seq_len(self, seq_len: int) -> None:
    """Fails (one line) unless both splits hold at least one window of seq_len."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
      raise CorpusError(f'seq_len must be a positive int, got {seq_len!r}')
    for split, n in self.num_bytes.items():
      if seq_len + 1 > n:
        raise CorpusError(f'seq_len {seq_len} needs {seq_len + 1} bytes per window but the '
                          f'{split} split has only {n}; use a shorter seq_len or more text')

  def window_starts(self, seed: int, step: int, batch_size: int, seq_len: int) -> np.ndarray:
    """Start offsets int64 [batch_size] of step's training windows, uniform over the split."""
    self.check_seq_len(seq_len)
    if not 0 <= step < 2**64:
      raise ValueError(f'step must be in [0, 2**64), got {step}')
    # Philox is counter-based: the key (seed, step) alone fixes the stream, no state.
    # Raw outputs, not Generator methods: numpy keeps bit streams stable across
    # versions, not Generator's algorithms. Modulo bias < span / 2**64, negligible.
    raw = np.random.Philox(key=(int(seed) % 2**64) << 64 | int(step)).random_raw(batch_size)
    span = self.num_bytes['train'] - seq_len  # starts 0..span-1 keep the window inside
    return (raw % np.uint64(span)).astype(np.int64)

  def batch_for_step(self, seed: int, step: int, batch_size: int, seq_len: int,
                     process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """Training windows of `step` -> uint8 [batch_size // process_count, seq_len+1].

    A pure function of its arguments. With several processes, each takes its own
    contiguous block of rows of the same global batch.
    """
    if batch_size % process_count:
      raise ValueError(f'batch_size {batch_size} is not divisible by process_count '
                       f'{process_count}')
    per = batch_size // process_count
    starts = self.window_starts(seed, step, batch_size, seq_len)
    starts = starts[process_index * per:(process_index + 1) * per]
    return self.read_windows('train', starts, seq_len + 1)

  def num_validation_windows(self, seq_len: int) -> int:
    return (self.num_bytes['validation'] - 1) // seq_len

  def validation_batches(self, batch_size: int, seq_len: int,
                         max_batches: int | None = None) -> Iterator[np.ndarray]:
    """The validation split in order -> uint8 [<= batch_size, seq_len+1] batches.

    Window k is bytes [k·seq_len, (k+1)·seq_len] (consecutive windows share one byte,
    so every target byte is scored exactly once). The last batch may have fewer rows;
    the last < seq_len bytes of the split are not scored.
    """
    self.check_seq_len(seq_len)
    windows = self.num_validation_windows(seq_len)
    if max_batches is not None:
      windows = min(windows, max_batches * batch_size)
    for first in range(0, windows, batch_size):
      rows = min(batch_size, windows - first)
      span = self.read('validation', first * seq_len, rows * seq_len + 1)
      yield np.lib.stride_tricks.sliding_window_view(span, seq_len + 1)[::seq_len].copy()
