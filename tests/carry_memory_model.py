"""A model with the smallest possible external store, for testing how the trainer carries,
resets, shards and checkpoints stores (memflax.train.MemoryTrainState) with NumPy checks.

The store ('memory' collection) holds per batch row the sum of every input vector seen
since that row's last reset and how many there were; the model's output at each position
adds the store's mean (as it was before this call) to the input before a dense layer.
"""

import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  output_size: int

  @nn.compact
  def __call__(self, inputs, train: bool = False, reset=None):
    """inputs [B, T, D], reset bool [B] -> (logits [B, T, output_size], {})."""
    batch, _, width = inputs.shape
    total = self.variable('memory', 'total', jnp.zeros, (batch, width), jnp.float32)
    count = self.variable('memory', 'count', jnp.zeros, (batch,), jnp.int32)
    keep = jnp.ones((batch,), bool) if reset is None else ~reset
    old_total = jnp.where(keep[:, None], total.value, 0.0)
    old_count = jnp.where(keep, count.value, 0)
    mean = old_total / jnp.maximum(old_count, 1)[:, None]
    logits = nn.Dense(self.output_size)(inputs + mean[:, None, :])
    if self.is_mutable_collection('memory'):
      total.value = old_total + inputs.sum(1)
      count.value = old_count + inputs.shape[1]
    return logits, {}
