"""The repeat copy task (Graves et al. 2014, "Neural Turing Machines", §4.2): read a
sequence of random bit vectors and a repeat count R, then write the sequence out R
times followed by an end-of-output marker.

The paper trains on sequences of 1–10 random 8-bit vectors and 1–10 repeats; the
count arrives on its own input channel, normalised to mean 0 and variance 1 over
the training range of counts. For R uniform on {a..b} (a = min_repeats,
b = max_repeats):

  r̃ = (R − μ) / σ,   μ = (a + b) / 2,   σ² = ((b − a + 1)² − 1) / 12

(σ = 1 when a = b). The defaults give μ = 5.5, σ = √8.25 ≈ 2.872, so R = 1 ↦ −1.567
and R = 10 ↦ +1.567. Probes with counts outside the training range keep the
training μ, σ, so the model sees values it never saw — the paper's generalisation test.

Layout of one example with L vectors and R repeats, padded to
T = max_length + 2 + max_length·max_repeats steps (112 at the defaults):
  t = 0..L-1           input: the L bit vectors (channels 0..num_bits-1)
  t = L                input: delimiter (channel num_bits) and r̃ (channel num_bits+1)
  t = L+1..L+L·R       input: zeros; target: the vectors, R times over (mask = 1)
  t = L+L·R+1          target: the end marker (output channel num_bits, mask = 1)
  later t              padding (mask = 0)
The end channel's target is 0 on every other masked step, so the model must also
learn when *not* to stop. A separate delimiter channel keeps the end of the input
visible even when r̃ happens to be 0.

Loss: binary cross-entropy over the num_bits+1 output channels on masked steps,
averaged per sequence and then over the batch; metric: bit errors per sequence.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from memflax.tasks._bits import bce_and_bit_errors, capped

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
  num_bits: int = 8
  min_length: int = 1
  max_length: int = 10
  min_repeats: int = 1
  max_repeats: int = 10

  # Class constants, not config fields (hence unannotated).
  primary_metric = 'bit_errors_per_seq'
  higher_is_better = False
  range_fields = ('min_length', 'max_length', 'min_repeats', 'max_repeats')
  curriculum_field = 'max_length'  # what a curriculum level caps
  bucket_fields = ('min_length', 'max_length')  # the size range length_buckets cut
  size_name = 'length'  # what probe(size) varies, for tables and plots

  def probe(self, size: int) -> dict:
    """make_batch overrides for sequences of exactly `size` vectors (repeat counts from the training range)."""
    return dict(min_length=size, max_length=size)

  def __post_init__(self):
    # config_checks validates *_length fields; the repeat range is this task's own.
    for name in ('min_repeats', 'max_repeats'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f'task.{name} must be an integer, got {value!r}')
    if not 1 <= self.min_repeats <= self.max_repeats:
      raise ValueError(f'task.min_repeats ({self.min_repeats}) and task.max_repeats '
                       f'({self.max_repeats}) must satisfy 1 <= min <= max')

  @property
  def input_size(self) -> int:
    return self.num_bits + 2

  @property
  def output_size(self) -> int:
    return self.num_bits + 1

  def normalised_repeats(self, repeats: Array) -> Array:
    """(R − μ)/σ with μ, σ of the uniform training range {min_repeats..max_repeats}."""
    a, b = self.min_repeats, self.max_repeats
    mean = (a + b) / 2
    std = (((b - a + 1)**2 - 1) / 12) ** 0.5 if a < b else 1.0
    return (repeats - mean) / std

  def make_batch(self, key: Array, batch_size: int, min_length: int | None = None,
                 max_length: int | None = None, min_repeats: int | None = None,
                 max_repeats: int | None = None, level: Array | None = None) -> dict[str, Array]:
    """Lengths and repeat counts uniform in their ranges, drawn per example (lengths
    capped at `level`, a traced curriculum cap, when given; T stays the same).

    Returns inputs [B, T, num_bits+2], targets [B, T, num_bits+1], mask [B, T],
    lengths [B] and repeats [B], with T = max_length + 2 + max_length·max_repeats.
    """
    lo = self.min_length if min_length is None else min_length
    hi = self.max_length if max_length is None else max_length
    rlo = self.min_repeats if min_repeats is None else min_repeats
    rhi = self.max_repeats if max_repeats is None else max_repeats
    num_steps = hi + 2 + hi * rhi
    length_key, repeat_key, bits_key = jax.random.split(key, 3)
    lengths = jax.random.randint(length_key, (batch_size,), lo, capped(lo, hi, level) + 1)
    repeats = jax.random.randint(repeat_key, (batch_size,), rlo, rhi + 1)
    bits = jax.random.bernoulli(bits_key, 0.5, (batch_size, hi, self.num_bits))
    bits = bits.astype(jnp.float32)

    steps = jnp.arange(num_steps)[None, :]
    length, repeat = lengths[:, None], repeats[:, None]
    end = length + 1 + length * repeat  # the end marker's step
    copying = (steps > length) & (steps < end)
    # Step t of the answer shows vector (t − L − 1) mod L; masks zero what is not used.
    source = jnp.where(copying, (steps - length - 1) % length, 0)
    echo = jnp.take_along_axis(bits, source[..., None], axis=1) * copying[..., None]
    shown = jnp.pad(bits, ((0, 0), (0, num_steps - hi), (0, 0))) * (steps < length)[..., None]
    at_delimiter = (steps == length).astype(jnp.float32)
    count = at_delimiter * self.normalised_repeats(repeat.astype(jnp.float32))
    inputs = jnp.concatenate([shown, at_delimiter[..., None], count[..., None]], axis=-1)
    is_end = (steps == end).astype(jnp.float32)
    targets = jnp.concatenate([echo, is_end[..., None]], axis=-1)
    mask = (copying | (steps == end)).astype(jnp.float32)
    return dict(inputs=inputs, targets=targets, mask=mask, lengths=lengths, repeats=repeats)

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, num_bits+1] -> (loss, {'loss', 'bit_errors_per_seq'}), batch means."""
    return bce_and_bit_errors(logits, batch['targets'], batch['mask'])

