"""The loss and metric shared by the bit-vector tasks (copy family, recall, sort)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def bce_and_bit_errors(logits: jax.Array, targets: jax.Array,
                       mask: jax.Array) -> tuple[jax.Array, dict]:
  """logits, targets [B, T, D], mask [B, T] -> (loss, {'loss', 'bit_errors_per_seq'}).

  The loss is the binary cross-entropy averaged over each sequence's masked target
  bits, then over the batch, so every sequence weighs the same whatever its length
  (per-device means then average exactly to the global mean). Bit errors count
  |round(σ(logit)) − target| over a sequence's masked bits.
  """
  mask = mask[..., None]
  per_bit = optax.sigmoid_binary_cross_entropy(logits, targets) * mask
  bits_per_seq = jnp.maximum(jnp.sum(mask, axis=(1, 2)) * targets.shape[-1], 1.0)
  loss = jnp.mean(jnp.sum(per_bit, axis=(1, 2)) / bits_per_seq)
  errors = jnp.abs((logits > 0).astype(jnp.float32) - targets) * mask
  return loss, {'loss': loss, 'bit_errors_per_seq': jnp.mean(jnp.sum(errors, axis=(1, 2)))}


def capped(lo: int, hi: int, level):
  """The largest size to draw: hi, or a curriculum's traced level clipped to [lo, hi]."""
  return hi if level is None else jnp.clip(level, lo, hi)
