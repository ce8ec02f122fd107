"""Length buckets: train on a few padded shapes instead of always the longest.

A task pads every batch to its longest possible example (copy: 2·20 + 1 = 41 steps,
although lengths 1..20 need 22 on average), so a recurrent model spends about half its
training steps on padding. With `config.length_buckets = K`, the task's size range
[lo, hi] (`task.bucket_fields`, e.g. copy's min_length/max_length) is cut into K
contiguous ranges of near-equal width, each with its own compiled step padded only to
its own maximum. Each training step draws one pivot size uniformly from [lo, hi] on the
host — a pure function of (seed, step), so resumed runs see the same batches — and uses
the bucket holding it; the batch's sizes are then drawn uniformly within that bucket.
A size s thus has probability (width_b / total) · (1 / width_b) = 1 / total: every
example's marginal distribution is exactly the unbucketed one, only examples of one
batch share a bucket. (The PyTorch NTM draws one length for the whole batch instead.)

Evaluation is not bucketed: held-out batches keep the task's full range and padding.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1


def bucket_ranges(lo: int, hi: int, count: int) -> list[tuple[int, int]]:
  """[lo, hi] cut into min(count, hi − lo + 1) contiguous inclusive ranges whose widths
  differ by at most one, shortest sizes first. bucket_ranges(1, 20, 4) ->
  [(1, 5), (6, 10), (11, 15), (16, 20)]."""
  total = hi - lo + 1
  count = max(1, min(count, total))
  edges = [lo + (total * i) // count for i in range(count + 1)]
  return [(edges[i], edges[i + 1] - 1) for i in range(count)]


def _mix64(x: int) -> int:
  """splitmix64's finaliser: a fixed bijection of 64-bit integers that scatters
  consecutive inputs (Steele et al. 2014)."""
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
  x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
  return x ^ (x >> 31)


def bucket_for_step(seed: int, step: int, ranges: list[tuple[int, int]]) -> int:
  """Index of the bucket step `step` (0-based) of a run with `seed` trains on: the one
  holding a pivot size drawn uniformly from the union of `ranges` (pure; host only)."""
  lo, hi = ranges[0][0], ranges[-1][1]
  draw = _mix64((_mix64(seed & _MASK64) + step + 0x9E3779B97F4A7C15) & _MASK64)
  pivot = lo + draw % (hi - lo + 1)
  return int(np.searchsorted([r[1] for r in ranges], pivot))


def task_buckets(task, count: int) -> list[dict] | None:
  """The make_batch overrides of each of `task`'s buckets, e.g. [{'min_length': 1,
  'max_length': 5}, ...], or None when `count` is 1 or the task has no size range (one
  shape, nothing to override)."""
  fields = getattr(task, 'bucket_fields', None)  # config_checks rejects count > 1 without
  if count <= 1 or fields is None:
    return None
  low_field, high_field = fields
  ranges = bucket_ranges(getattr(task, low_field), getattr(task, high_field), count)
  return [{low_field: lo, high_field: hi} for lo, hi in ranges]


def bucket_of_step(seed: int, step: int, buckets: list[dict]) -> int:
  """bucket_for_step over task_buckets' override dicts (their two fields: low, high)."""
  return bucket_for_step(seed, step, [tuple(b.values()) for b in buckets])


def bucket_probabilities(buckets: list[dict]) -> list[float]:
  """How often training draws each of task_buckets' buckets: its width over the whole
  range's (the pivot is uniform over sizes), e.g. [0.3, 0.35, 0.35] for copy's 1..20 in 3."""
  widths = [hi - lo + 1 for lo, hi in (tuple(b.values()) for b in buckets)]
  return [w / sum(widths) for w in widths]
