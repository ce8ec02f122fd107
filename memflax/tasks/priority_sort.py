"""The priority sort task (Graves et al. 2014, "Neural Turing Machines", §4.5): read
random bit vectors, each with a scalar priority, then write out the highest-priority
vectors in descending order of priority.

As in the paper the input holds `num_inputs` = 20 random 8-bit vectors with
priorities uniform in [−1, 1] and the target is the `num_outputs` = 16 vectors of
highest priority, highest first.

Layout of one example (N = num_inputs, M = num_outputs, T = N + 1 + M = 37 steps):
  t = 0..N-1        input: vector t (channels 0..num_bits-1), its priority (channel num_bits)
  t = N             input: delimiter (channel num_bits+1)
  t = N+1..N+M      input: zeros; target: the M top-priority vectors, highest first (mask = 1)
Every example has the same length, so nothing is padded.

Loss: binary cross-entropy over the M·num_bits target bits, per sequence then over
the batch; metric: bit errors per sequence.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from memflax.tasks._bits import bce_and_bit_errors

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  num_bits: int = 8
  num_inputs: int = 20
  num_outputs: int = 16

  # Class constants, not config fields (hence unannotated).
  primary_metric = 'bit_errors_per_seq'
  higher_is_better = False
  range_fields = ('num_inputs', 'num_outputs')
  size_name = 'inputs'  # what probe(size) varies, for tables and plots

  def probe(self, size: int) -> dict:
    """make_batch overrides for `size` input vectors, the same fraction of them sorted as
    in training."""
    sorted_fraction = self.num_outputs / self.num_inputs
    return dict(num_inputs=size, num_outputs=max(1, round(size * sorted_fraction)))

  def __post_init__(self):
    _check_counts(self.num_inputs, self.num_outputs, 'task.')

  @property
  def input_size(self) -> int:
    return self.num_bits + 2

  @property
  def output_size(self) -> int:
    return self.num_bits

  def make_batch(self, key: Array, batch_size: int, num_inputs: int | None = None,
                 num_outputs: int | None = None) -> dict[str, Array]:
    """Returns inputs [B, T, num_bits+2], targets [B, T, num_bits], mask [B, T],
    priorities [B, N] and order [B, M] (the input index of each target vector),
    with T = num_inputs + 1 + num_outputs."""
    n = self.num_inputs if num_inputs is None else num_inputs
    m = self.num_outputs if num_outputs is None else num_outputs
    _check_counts(n, m, '')
    bits_key, priority_key = jax.random.split(key)
    bits = jax.random.bernoulli(bits_key, 0.5, (batch_size, n, self.num_bits))
    bits = bits.astype(jnp.float32)
    priorities = jax.random.uniform(priority_key, (batch_size, n), minval=-1.0, maxval=1.0)
    # Equal float32 priorities (~1e-5 per sequence) keep input order: argsort is stable.
    order = jnp.argsort(-priorities, axis=1)[:, :m]
    ranked = jnp.take_along_axis(bits, order[..., None], axis=1)

    # Pad the read phase with the answer phase's steps and the delimiter channel.
    shown = jnp.concatenate([bits, priorities[..., None]], axis=-1)
    inputs = jnp.pad(shown, ((0, 0), (0, 1 + m), (0, 1))).at[:, n, -1].set(1.0)
    targets = jnp.pad(ranked, ((0, 0), (n + 1, 0), (0, 0)))
    mask = jnp.broadcast_to(jnp.arange(n + 1 + m) > n, (batch_size, n + 1 + m))
    return dict(inputs=inputs, targets=targets, mask=mask.astype(jnp.float32),
                priorities=priorities, order=order)

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, num_bits] -> (loss, {'loss', 'bit_errors_per_seq'}), batch means."""
    return bce_and_bit_errors(logits, batch['targets'], batch['mask'])

  def reference_cost(self, batch: dict[str, Array]) -> None:
    """None: there is no informative reference cost for this task.

    The target is a deterministic function of the input, so the Bayes-optimal
    cost is 0, and the paper reports learning
    curves only. The trivial baseline, predicting ½ everywhere, scores
    num_outputs·num_bits/2 expected bit errors per sequence (64 at the defaults).
    """
    del batch
    return None

  def bucket_sort_bit_errors(self, batch: dict, num_slots: int) -> float:
    """Expected bit errors per sequence of an ideal bucket sort into `num_slots` slots.

    The NTM paper reads the learned priority-sort program as one: each vector is written
    to the slot its priority selects, then the slots are read in order. With a finite
    memory two vectors whose priorities fall into the same slot are superimposed. This
    scores the best such a program can do, to say how much of a trained NTM's error its
    memory size explains: vector i goes to slot ⌊(p_i + 1)/2 · num_slots⌋; each output
    reads the slot of its target vector and answers each bit with the mean of the
    vectors stored there (a perfect reader, which even reads a shared slot once per
    vector in it); a mean of exactly ½ counts half an error (a coin flip).

    batch: `make_batch`'s arrays (`inputs` [B, T, num_bits+2], `priorities` [B, N],
    `order` [B, M]), as numpy or jax arrays.
    """
    priorities = np.asarray(batch['priorities'], np.float64)
    order = np.asarray(batch['order'])
    n = priorities.shape[1]
    bits = np.asarray(batch['inputs'])[:, :n, :self.num_bits]
    slot = np.minimum(np.floor((priorities + 1) / 2 * num_slots), num_slots - 1)
    shares = slot[:, :, None] == slot[:, None, :]                          # [B, N, N]
    stored = shares @ bits / shares.sum(-1, keepdims=True)                 # [B, N, bits]
    read = np.take_along_axis(stored, order[..., None], axis=1)            # [B, M, bits]
    target = np.take_along_axis(bits, order[..., None], axis=1)
    answer = np.where(read == 0.5, 0.5, (read > 0.5).astype(np.float64))
    return float(np.abs(answer - target).sum((1, 2)).mean())

  def errors_by_priority_gap(self, batch: dict, logits,
                             edges=(0.005, 0.01, 0.02, 0.05, 0.1)) -> list[dict]:
    """A model's bit errors per target vector, grouped by how near the vector's priority
    lies to the nearest other priority in its sequence: where a memory's write cannot tell
    two priorities apart, their vectors blur together (each slot of 128 spans 0.0156).

    batch: `make_batch`'s arrays for a batch of B sequences; logits [B, T, num_bits].
    Returns one row per gap range [lower, upper) from 0 through `edges` to infinity:
    {'gap_from', 'gap_to', 'fraction' (of all target vectors), 'bit_errors_per_vector'
    (None where the range holds none)}; fraction-weighted, the rows' errors sum to the
    bit errors per target vector overall.
    """
    priorities = np.asarray(batch['priorities'], np.float64)
    order = np.asarray(batch['order'])
    n, m = priorities.shape[1], order.shape[1]
    answers = np.asarray(logits)[:, n + 1:, :] > 0
    targets = np.asarray(batch['targets'])[:, n + 1:, :] > 0.5
    errors = (answers != targets).sum(-1)                                    # [B, M]
    ranked = -np.sort(-priorities, axis=1)       # descending, so target j has rank j
    above = np.diff(ranked, axis=1, prepend=np.inf)
    below = np.diff(ranked, axis=1, append=-np.inf)
    gap = np.minimum(np.abs(above), np.abs(below))[:, :m]                    # [B, M]
    bounds = (0.0, *edges, np.inf)
    rows = []
    for lower, upper in zip(bounds[:-1], bounds[1:]):
      inside = (gap >= lower) & (gap < upper)
      rows.append(dict(gap_from=lower, gap_to=None if upper == np.inf else upper,
                       fraction=float(inside.mean()),
                       bit_errors_per_vector=float(errors[inside].mean()) if inside.any()
                       else None))
    return rows

  def target_slot_read_fraction(self, batch: dict, read_weights, write_weights) -> float:
    """The fraction of target vectors whose output step reads (its first read head's
    largest weight) the slot that the first write head weighted most when that vector
    came in: 1 for any program that reads back, in priority order, what it wrote to
    distinct slots, whether it wrote them by priority or in order of arrival
    (`write_slot_order` tells these apart).

    batch: `make_batch`'s arrays; read_weights [B, T, R, N] and write_weights
    [B, T, Wr, N], the weightings of each step (the NTM's and DNC's traces; at output step
    t the read head reads what step t's output is made from).
    """
    order = np.asarray(batch['order'])
    n, m = np.asarray(batch['priorities']).shape[1], order.shape[1]
    written = _written_slots(batch, write_weights)                          # [B, N]
    read = np.asarray(read_weights)[:, n + 1:n + 1 + m, 0].argmax(-1)       # [B, M]
    return float((read == np.take_along_axis(written, order, axis=1)).mean())

  def write_slot_order(self, batch: dict, write_weights) -> dict:
    """Where the first write head puts the input vectors (its largest weight per input
    step): {'by_priority', 'by_arrival'}, the mean over sequences of the rank (Spearman)
    correlation of the slots with the priorities and with the input positions, and
    'distinct_slots', the mean number of different slots the N vectors go to. A bucket
    sort writes by priority (|by_priority| near 1, vectors of close priority sharing a
    slot); a program that reads by content can write in arrival order (by_arrival near 1,
    N distinct slots). Sequences whose slots are all equal have no correlation and are
    left out of the means (nan if all are).

    batch: `make_batch`'s arrays; write_weights [B, T, Wr, N].
    """
    priorities = np.asarray(batch['priorities'], np.float64)
    n = priorities.shape[1]
    slots = _written_slots(batch, write_weights).astype(np.float64)         # [B, N]
    arrival = np.broadcast_to(np.arange(n, dtype=np.float64), slots.shape)
    by_priority = _rank_correlation(slots, priorities)
    by_arrival = _rank_correlation(slots, arrival)
    distinct = (np.diff(np.sort(slots, axis=1), axis=1) != 0).sum(1) + 1
    mean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else float('nan')
    return dict(by_priority=mean(by_priority), by_arrival=mean(by_arrival),
                distinct_slots=float(distinct.mean()))


def _written_slots(batch: dict, write_weights) -> np.ndarray:
  """The slot the first write head weighted most at each input step: [B, N] ints."""
  n = np.asarray(batch['priorities']).shape[1]
  return np.asarray(write_weights)[:, :n, 0].argmax(-1)


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks along the last axis, ties sharing their mean rank (1-based): [B, N] -> [B, N]."""
  less = (x[..., :, None] > x[..., None, :]).sum(-1)
  equal = (x[..., :, None] == x[..., None, :]).sum(-1)
  return less + (equal + 1) / 2


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Spearman's ρ of each row of x [B, N] with the same row of y; nan where a row is
  constant."""
  rx, ry = _ranks(x), _ranks(y)
  rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
  norm = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
  return np.where(norm > 0, (rx * ry).sum(-1) / np.where(norm > 0, norm, 1), np.nan)


def _check_counts(n: int, m: int, prefix: str) -> None:
  if not 1 <= m <= n:
    raise ValueError(f'{prefix}num_outputs ({m}) must be between 1 and {prefix}num_inputs ({n})')
