"""The associative recall task (Graves et al. 2014, "Neural Turing Machines", §4.3):
read a list of items, then, given one of them as a query, produce the item that
followed it.

As in the paper an item is `item_length` = 3 random vectors of `num_bits` = 6 bits
(18 bits per item), an episode holds 2–6 items, items are bounded by delimiter
symbols, and the query is marked by a different delimiter. The query is drawn
uniformly from items 0..N−2, so it is never the last item.

Layout of one example with N items (I = item_length, padded to
T = (I+1)·max_items + 2·I + 2 steps, 32 at the defaults):
  t = (I+1)·i                item delimiter (channel num_bits), i = 0..N-1
  t = (I+1)·i + 1..+I        input: item i (channels 0..num_bits-1)
  t = q0 = (I+1)·N           query delimiter (channel num_bits+1)
  t = q0+1..q0+I             input: the query, a copy of item q
  t = q0+I+1                 query delimiter again, closing the query
  t = q0+I+2..q0+2I+1        input: zeros; target: item q+1 (mask = 1)
  later t                    padding (mask = 0)
Items are not forced to be distinct: two equal 18-bit items in one episode have
probability < 1e-4, and the target is then still the item after the queried slot.

Loss: binary cross-entropy over the answer's I·num_bits bits, per sequence then
over the batch; metric: bit errors per sequence.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from memflax.tasks._bits import bce_and_bit_errors, capped

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  num_bits: int = 6
  item_length: int = 3
  min_items: int = 2
  max_items: int = 6

  # Class constants, not config fields (hence unannotated).
  primary_metric = 'bit_errors_per_seq'
  higher_is_better = False
  range_fields = ('min_items', 'max_items')
  curriculum_field = 'max_items'  # what a curriculum level caps
  bucket_fields = ('min_items', 'max_items')  # the size range length_buckets cut
  size_name = 'items'  # what probe(size) varies, for tables and plots
  smallest_size = 2  # the queried item needs a successor

  def probe(self, size: int) -> dict:
    """make_batch overrides for exactly `size` items stored before the query."""
    return dict(min_items=size, max_items=size)

  def __post_init__(self):
    # config_checks checks num_*/*_length/*_bits fields; the item range is this task's own.
    for name in ('min_items', 'max_items'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f'task.{name} must be an integer, got {value!r}')
    _check_items(self.min_items, self.max_items, 'task.min_items', 'task.max_items')

  @property
  def input_size(self) -> int:
    return self.num_bits + 2

  @property
  def output_size(self) -> int:
    return self.num_bits

  def make_batch(self, key: Array, batch_size: int, min_items: int | None = None,
                 max_items: int | None = None, level: Array | None = None) -> dict[str, Array]:
    """Item counts uniform in [min_items, max_items], drawn per example (capped at
    `level`, a traced curriculum cap, when given; T stays the same).

    Returns inputs [B, T, num_bits+2], targets [B, T, num_bits], mask [B, T],
    num_items [B] and query [B] (the queried item's index), with
    T = (item_length+1)·max_items + 2·item_length + 2.
    """
    lo = self.min_items if min_items is None else min_items
    hi = self.max_items if max_items is None else max_items
    _check_items(lo, hi, 'min_items', 'max_items')
    span = self.item_length + 1  # one delimiter plus the item
    num_steps = span * hi + 2 * self.item_length + 2
    count_key, query_key, bits_key = jax.random.split(key, 3)
    num_items = jax.random.randint(count_key, (batch_size,), lo,
                                   capped(lo, hi, level) + 1)
    query = jax.random.randint(query_key, (batch_size,), 0, num_items - 1)
    items = jax.random.bernoulli(bits_key, 0.5, (batch_size, hi * self.item_length,
                                                 self.num_bits)).astype(jnp.float32)

    steps = jnp.arange(num_steps)[None, :]
    n, q = num_items[:, None], query[:, None]
    q0 = span * n
    in_items = steps < q0
    item_delimiter = in_items & (steps % span == 0)
    item_bits = in_items & ~item_delimiter
    query_delimiter = (steps == q0) | (steps == q0 + self.item_length + 1)
    query_bits = (steps > q0) & (steps <= q0 + self.item_length)
    answer = (steps > q0 + self.item_length + 1) & (steps <= q0 + 2 * self.item_length + 1)
    # Each shown vector is row (item index · I + row within item) of `items`.
    row = jnp.where(item_bits, (steps // span) * self.item_length + steps % span - 1, 0)
    row = jnp.where(query_bits, q * self.item_length + steps - q0 - 1, row)
    row = jnp.where(answer, (q + 1) * self.item_length + steps - q0 - self.item_length - 2, row)
    vectors = jnp.take_along_axis(items, row[..., None], axis=1)

    inputs = jnp.concatenate([
        vectors * (item_bits | query_bits)[..., None],
        item_delimiter[..., None].astype(jnp.float32),
        query_delimiter[..., None].astype(jnp.float32),
    ], axis=-1)
    return dict(inputs=inputs, targets=vectors * answer[..., None],
                mask=answer.astype(jnp.float32), num_items=num_items, query=query)

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, num_bits] -> (loss, {'loss', 'bit_errors_per_seq'}), batch means."""
    return bce_and_bit_errors(logits, batch['targets'], batch['mask'])


def _check_items(lo: int, hi: int, lo_name: str, hi_name: str) -> None:
  # At least two items, so that the query can have a successor.
  if not 2 <= lo <= hi:
    raise ValueError(f'{lo_name} ({lo}) and {hi_name} ({hi}) must satisfy 2 <= min <= max '
                     f'(the queried item needs a successor)')

