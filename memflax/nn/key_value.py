"""Key-value memory: a fixed set of learnable (key, value) slots read by soft attention.

Seed 003 §4.2.1: with keys K [N, d_k], values V [N, d_v] and a query q,

  r = Σ_{i=1}^{N} exp(qᵀ k_i) / Σ_{j=1}^{N} exp(qᵀ k_j) · v_i = softmax(q Kᵀ) V

Unlike `dot_product_attention` there is no 1/√d_k scale: the equation has none,
and the keys' initial scale (below) does that job instead. The slots are
parameters, so the memory stores what training puts there, not the input.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def address(query: Array, keys: Array) -> Array:
  """`w_i = softmax_i(qᵀ k_i)`. query [..., d_k], keys [N, d_k] -> weights [..., N].

  Computed in at least float32, so bf16 queries still give weights that sum to 1.
  """
  dtype = jnp.promote_types(jnp.result_type(query, keys), jnp.float32)
  logits = jnp.einsum('...k,nk->...n', query, keys, preferred_element_type=dtype)
  return jax.nn.softmax(logits, axis=-1)


def read(weights: Array, values: Array) -> Array:
  """`r = Σ_i w_i v_i`. weights [..., N], values [N, d_v] -> [..., d_v]."""
  return jnp.einsum('...n,nv->...v', weights.astype(values.dtype), values)


class KeyValueMemory(nn.Module):
  """Reads `r = Σ_i softmax_i(qᵀ k_i) v_i` from learnable K [N, d_k] and V [N, d_v].

  Params: `keys` [num_slots, d_k] (d_k = the query's last dim), `values`
  [num_slots, value_size]. Shapes: query [..., d_k] -> read [..., d_v], plus
  weights [..., N] when `return_weights`; like nn.Dense, a bf16 query with
  float32 params reads in float32. Keys start at N(0, 1/d_k), so for a
  query of unit-variance components (e.g. a LayerNorm output) qᵀk_i starts near
  N(0, 1): the softmax begins spread over many slots instead of saturated on one
  (which the seed's N(0, 1) keys would give, with logits of scale √d_k).
  """

  num_slots: int
  value_size: int
  values_init: Any = nn.initializers.normal(stddev=1.0)

  @nn.compact
  def __call__(self, query: Array, return_weights: bool = False):
    key_size = query.shape[-1]
    keys = self.param('keys', nn.initializers.normal(stddev=key_size ** -0.5),
                      (self.num_slots, key_size))
    values = self.param('values', self.values_init, (self.num_slots, self.value_size))
    weights = address(query, keys)
    r = read(weights, values)
    return (r, weights) if return_weights else r
