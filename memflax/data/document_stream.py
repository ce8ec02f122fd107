"""Documents fed segment after segment, for models that carry a memory across segments.

A retrieval-augmented model (memflax.models.knn_transformer) reads a long document in
segments of T bytes and keeps the keys and values of earlier segments in a store. So
batch row b is a *lane*: it walks its documents in order, one segment per step, and
starts an empty store (`reset`) at each document's first segment. Random windows
(memflax.data.byte_batches) would hand it unrelated text every step.

Document d of a split is, in the corpus stream, the bytes between two NUL separators.
Its token sequence is NUL, the document's bytes, NUL: the leading NUL is the context
of the first byte and the trailing one is the end to predict, L_d = len + 2 tokens and
L_d − 1 targets. Segment j has inputs tokens[jT : jT+T] and targets tokens[jT+1 : jT+T+1];
the last segment's `lengths` (valid targets) may be < T, its tail zero-padded.

Training lanes are a pure function of (seed, step), like every memflax batch: the
train documents are shuffled by a counter-based RNG keyed by the seed into one cycle of
S segments, and lane b of B reads it from offset ⌊b·S/B⌋, one segment per step: at step
s it is at position (⌊b·S/B⌋ + s) mod S. The lanes are staggered copies of the same cycle,
so every lane sees every document, any number of lanes works with any number of
documents, and nothing but the step needs checkpointing. (A lane's first segment may be
the middle of a document; its store is empty then, as after a reset.) Validation walks
every document once, cut into pieces of at most `piece_segments` segments that each start
from an empty store, dealt to lanes longest-first so that lanes finish together.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from memflax.data.corpus_files import CorpusError

SEPARATOR = 0


def document_bounds(corpus, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(first, separator) int64 [D]: document d is stream bytes [first[d], separator[d]) and
  separator[d] is the position of its closing NUL."""
  separators, offset = [], 0
  for chunk in corpus.chunks(split):
    separators.append(np.flatnonzero(chunk == SEPARATOR) + offset)
    offset += len(chunk)
  ends = np.concatenate(separators).astype(np.int64) if separators else np.zeros(0, np.int64)
  if offset and (not len(ends) or ends[-1] != offset - 1):  # a stream not closed by a NUL
    ends = np.append(ends, offset)
  firsts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
  return firsts, ends


def num_segments(separators: np.ndarray, firsts: np.ndarray, seq_len: int) -> np.ndarray:
  """Segments per document: ceil((L_d − 1) / T) with L_d = length + 2 tokens."""
  targets = separators - firsts + 1
  return -(-targets // seq_len)


class DocumentLanes:
  """One split's documents as lanes of segments (see the module docstring)."""

  def __init__(self, corpus, split: str, seq_len: int):
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
      raise CorpusError(f'seq_len must be a positive int, got {seq_len!r}')
    self.corpus, self.split, self.seq_len = corpus, split, int(seq_len)
    self.firsts, self.separators = document_bounds(corpus, split)
    self.segments = num_segments(self.separators, self.firsts, self.seq_len)
    self._schedules = {}

  @property
  def num_documents(self) -> int:
    return len(self.firsts)

  def read_segments(self, documents: np.ndarray, segments: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment `segments[i]` of document `documents[i]` (−1: an idle row) ->
    (tokens uint8 [N, T+1], lengths int32 [N] valid targets, reset bool [N] first segment)."""
    documents, segments = np.asarray(documents, np.int64), np.asarray(segments, np.int64)
    T = self.seq_len
    tokens = np.zeros((len(documents), T + 1), np.uint8)
    lengths = np.zeros(len(documents), np.int32)
    active = documents >= 0
    if not active.any():
      return tokens, lengths, np.zeros(len(documents), bool)
    d, j = documents[active], segments[active]
    # Token i of document d is stream byte firsts[d] − 1 + i (token 0 is the NUL before
    # it, virtual for the first document); the last token is its own closing NUL.
    start = self.firsts[d] - 1 + j * T
    stop = np.minimum(start + T + 1, self.separators[d] + 1)
    limit = self.corpus.num_bytes[self.split]
    lo, hi = np.maximum(start, 0), np.minimum(stop, limit)  # the bytes that exist in the split
    span = int((hi - lo).max())
    read_from = np.minimum(lo, limit - span)  # one batched read of equal windows, in the split
    windows = self.corpus.read_windows(self.split, read_from, span)
    rows = np.zeros((len(d), T + 1), np.uint8)  # virtual NULs and padding stay 0
    for i in range(len(d)):
      rows[i, lo[i] - start[i]:hi[i] - start[i]] = windows[i, lo[i] - read_from[i]:
                                                          hi[i] - read_from[i]]
    tokens[active] = rows
    lengths[active] = (stop - start - 1).astype(np.int32)
    return tokens, lengths, active & (segments == 0)

  # ------------------------------------------------------------- training lanes
  def _cycle(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(documents in cycle order, cumulative segment counts) for `seed`."""
    if seed not in self._schedules:
      # Raw Philox outputs (stable across numpy versions) sorted: a permutation fixed by seed.
      raw = np.random.Philox(key=(int(seed) % 2**64) << 64).random_raw(self.num_documents)
      order = np.argsort(raw, kind='stable')
      self._schedules[seed] = order, np.cumsum(self.segments[order])
    return self._schedules[seed]

  def positions(self, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(document, segment) int64 [batch_size] of each lane at `step`."""
    if not 0 <= step < 2**63:
      raise ValueError(f'step must be in [0, 2**63), got {step}')
    order, ends = self._cycle(seed)
    total = int(ends[-1])
    at = (np.arange(batch_size, dtype=np.int64) * total // batch_size + step % total) % total
    k = np.searchsorted(ends, at, side='right')
    return order[k], at - np.where(k > 0, ends[k - 1], 0)

  def batch_for_step(self, seed: int, step: int, batch_size: int, process_index: int = 0,
                     process_count: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This process's rows (a contiguous block of the global batch) of `step`:
    tokens uint8 [B/P, T+1], lengths int32 [B/P], reset bool [B/P]. Pure in its arguments."""
    if batch_size % process_count:
      raise ValueError(f'batch_size {batch_size} is not divisible by process_count '
                       f'{process_count}')
    documents, segments = self.positions(seed, step, batch_size)
    per = batch_size // process_count
    mine = slice(process_index * per, (process_index + 1) * per)
    return self.read_segments(documents[mine], segments[mine])

  # ------------------------------------------------------------- validation lanes
  def documents_for(self, max_segments: int | None) -> int | None:
    """How many documents, in corpus order, make up at least `max_segments` segments (the
    last one read whole); None (every document) for None."""
    if max_segments is None:
      return None
    return max(1, int(np.searchsorted(np.cumsum(self.segments), max_segments)) + 1)

  def validation_plan(self, lanes: int, max_documents: int | None = None,
                      piece_segments: int | None = None) -> list[list[tuple[int, int, int]]]:
    """Per lane, its pieces (document, first segment, segments): all documents or the first
    `max_documents` in corpus order, each cut into pieces of at most `piece_segments`
    segments, dealt longest-first to the lane with the fewest segments so far."""
    count = self.num_documents if max_documents is None else min(max_documents,
                                                                 self.num_documents)
    cap = piece_segments or max(int(self.segments.max(initial=1)), 1)
    pieces = [(d, first, min(cap, int(self.segments[d]) - first))
              for d in range(count) for first in range(0, int(self.segments[d]), cap)]
    plan, load = [[] for _ in range(lanes)], np.zeros(lanes, np.int64)
    for piece in sorted(pieces, key=lambda p: (-p[2], p[0], p[1])):
      b = int(np.argmin(load))
      plan[b].append(piece)
      load[b] += piece[2]
    return plan

  def validation_steps(self, lanes: int, max_documents: int | None = None,
                       piece_segments: int | None = None
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every segment of the chosen documents once, lane by lane in order: batches of
    (tokens [lanes, T+1], lengths [lanes], reset [lanes]); reset at the start of every piece
    (see validation_plan); a lane that has finished idles with lengths 0 and reset True."""
    walks = []
    for pieces in self.validation_plan(lanes, max_documents, piece_segments):
      d = [doc for doc, _, n in pieces for _ in range(n)]
      j = [first + i for _, first, n in pieces for i in range(n)]
      starts = [i == 0 for _, _, n in pieces for i in range(n)]
      walks.append((d, j, starts))
    steps = max((len(d) for d, _, _ in walks), default=0)
    for s in range(steps):
      here = [s < len(d) for d, _, _ in walks]
      documents = np.array([w[0][s] if h else -1 for w, h in zip(walks, here)], np.int64)
      segments = np.array([w[1][s] if h else 0 for w, h in zip(walks, here)], np.int64)
      tokens, lengths, _ = self.read_segments(documents, segments)
      # An idle lane resets every step: its store stays empty instead of filling with padding.
      reset = np.array([w[2][s] if h else True for w, h in zip(walks, here)])
      yield tokens, lengths, reset

  def scored_windows(self, lanes: int, max_documents: int | None = None,
                     piece_segments: int | None = None) -> Iterator[np.ndarray]:
    """The validation segments' scored parts as windows uint8 [1, length+1] (inputs w[:, :-1],
    targets w[:, 1:]), in the order validation_steps reads them: what a baseline such as
    memflax.data.bits.bigram_bits_per_byte must score to compare with the model."""
    for tokens, lengths, _ in self.validation_steps(lanes, max_documents, piece_segments):
      for row, n in zip(tokens, lengths):
        if n:
          yield row[None, :n + 1]
