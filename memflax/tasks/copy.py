"""The copy task (Graves et al. 2014, §4.1): read a sequence of random bit vectors, then
reproduce it after a delimiter.

Layout of one example of length L, padded to `2·max_length + 1` steps:
  t = 0..L-1      input: the L bit vectors (channels 0..num_bits-1)
  t = L           input: the delimiter (channel num_bits)
  t = L+1..2L     input: zeros; target: the L bit vectors again (mask = 1)
  t > 2L          padding (mask = 0)
Every example in a batch has its own L, so one compiled step serves all lengths.

Loss is the binary cross-entropy per output bit, averaged over each sequence's
L·num_bits target bits and then over the batch (every sequence weighs the same,
so per-device means average exactly to the global mean). The metric is bit
errors per sequence: |round(σ(logit)) − target| summed over the sequence.

Batches are a pure function of their PRNG key: the trainer passes
`fold_in(data_key, step)`, which makes any step's batch reproducible.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from memflax.tasks._bits import capped

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  num_bits: int = 8
  min_length: int = 1
  max_length: int = 20

  # Class constants, not config fields (hence unannotated): evaluation's headline
  # metric and the make_batch overrides that probe generalisation.
  primary_metric = 'bit_errors_per_seq'
  higher_is_better = False
  range_fields = ('min_length', 'max_length')
  curriculum_field = 'max_length'  # what a curriculum level caps
  bucket_fields = ('min_length', 'max_length')  # the size range length_buckets cut
  size_name = 'length'  # what probe(size) varies, for tables and plots

  def probe(self, size: int) -> dict:
    """make_batch overrides for sequences of exactly `size` vectors."""
    return dict(min_length=size, max_length=size)

  @property
  def input_size(self) -> int:
    return self.num_bits + 1

  @property
  def output_size(self) -> int:
    return self.num_bits

  def make_batch(self, key: Array, batch_size: int, min_length: int | None = None,
                 max_length: int | None = None, level: Array | None = None) -> dict[str, Array]:
    """Random copy examples with lengths uniform in [min_length, max_length] (capped at
    `level`, a traced curriculum cap, when given; T stays the same).

    Returns inputs [B, T, num_bits+1], targets [B, T, num_bits], mask [B, T] and
    lengths [B], with T = 2·max_length + 1.
    """
    lo = self.min_length if min_length is None else min_length
    hi = self.max_length if max_length is None else max_length
    length_key, bits_key = jax.random.split(key)
    lengths = jax.random.randint(length_key, (batch_size,), lo, capped(lo, hi, level) + 1)
    bits = jax.random.bernoulli(bits_key, 0.5, (batch_size, hi, self.num_bits))
    bits = bits.astype(jnp.float32)

    steps = jnp.arange(2 * hi + 1)[None, :]
    length = lengths[:, None]
    in_phase = steps < length
    out_phase = (steps > length) & (steps <= 2 * length)
    # Pad bits by one step so every t has an index in range; masks decide what is used.
    padded = jnp.pad(bits, ((0, 0), (0, hi + 1), (0, 0)))
    echo = jnp.take_along_axis(padded, jnp.clip(steps - length - 1, 0)[..., None], axis=1)
    inputs = jnp.concatenate([
        padded[:, :2 * hi + 1] * in_phase[..., None],
        (steps == length)[..., None].astype(jnp.float32),
    ], axis=-1)
    return dict(inputs=inputs, targets=echo * out_phase[..., None],
                mask=out_phase.astype(jnp.float32), lengths=lengths)

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, num_bits] -> (scalar loss, {'loss', 'bit_errors_per_seq'}), batch means."""
    mask = batch['mask'][..., None]
    per_bit = optax.sigmoid_binary_cross_entropy(logits, batch['targets']) * mask
    bits_per_seq = jnp.maximum(jnp.sum(mask, axis=(1, 2)) * self.num_bits, 1.0)
    loss = jnp.mean(jnp.sum(per_bit, axis=(1, 2)) / bits_per_seq)
    errors = jnp.abs((logits > 0).astype(jnp.float32) - batch['targets']) * mask
    bit_errors = jnp.mean(jnp.sum(errors, axis=(1, 2)))
    return loss, {'loss': loss, 'bit_errors_per_seq': bit_errors}


