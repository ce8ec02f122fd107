"""Memory-augmented Transformer (seed 003 §5): a causal Transformer whose output
queries a learnable key-value memory.

  h      = CausalEncoder(inputs)                       [B, T, d_model]
  r_t    = Σ_i softmax_i(h_tᵀ k_i) v_i                 (seed 003 §4.2.1), [B, T, value_size]
  logits = [h_t, r_t] W_fc + b_fc                      [B, T, output_size]

The query is h_t itself, as in the seed, so the keys have width d_model. The
memory holds slots learned across the whole training set (long-term knowledge),
not anything written from the current sequence — so decoding needs no memory
state beyond the Transformer's key/value cache.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.models import transformer
from memflax.nn.key_value import KeyValueMemory


class Model(transformer.Model):
  """inputs [B, T, D] -> (logits [B, T, output_size], {'memory_weights': [B, T, N]}).

  The causal Transformer of memflax.models.transformer (same fields, and its
  `__call__`, `init_decode_state` and `decode_step`) plus a key-value memory of
  `memory_slots` slots with values of width `value_size` in its read-out head.
  """

  memory_slots: int = 128
  value_size: int = 64

  def setup(self):
    super().setup()
    self.memory = KeyValueMemory(self.memory_slots, self.value_size)

  def head(self, h: jax.Array):
    """h [..., d_model] -> (logits [..., output_size], {'memory_weights': [..., N]})."""
    r, weights = self.memory(h, return_weights=True)
    logits = self.readout(jnp.concatenate([h, r], axis=-1))
    return logits, {'memory_weights': weights}
