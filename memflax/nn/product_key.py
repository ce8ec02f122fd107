"""Product-key memory (Lample et al. 2019, "Large Memory Layers with Product Keys").

A memory of N = n² slots whose keys are the Cartesian product of two sets of
n sub-keys, so the exact top-k over all N keys costs O(n + k²) per query, never O(N):

  q      = Norm(x W_q)                     per head h: q = [q1, q2], q1, q2 ∈ R^{d_k/2}
  s1     = q1 K1ᵀ,  s2 = q2 K2ᵀ            K1, K2 [n, d_k/2] (one pair per head), s1, s2 [n]
  (i, j) = top-k over s1[i] + s2[j]        = top-k of all N products, slot index i·n + j
  w      = softmax(s1[i] + s2[j]) over the k selected slots
  y      = Σ_h Σ_{selected} w · V[i·n + j]             V [N, d_v], shared by all heads
  out    = y W_o                           (optional)

The candidate step is exact: a pair outside top_k(s1) × top_k(s2) has at least k
pairs scoring no less than it (swap the row for any of the k better rows), so it
can never be in the top k. Only the value table V is O(N); its gradient is
non-zero on the selected rows only.

Shapes: x [B, T, D] (any leading axes) -> [B, T, D_out], D_out = out_features,
else value_size, else D.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
QUERY_NORMS = ('layer', 'none')


def num_sub_keys(num_slots: int, what: str = 'num_slots') -> int:
  """n = √N, for N slots; ValueError unless N is a perfect square (`what` names N)."""
  n = math.isqrt(num_slots) if isinstance(num_slots, int) and num_slots > 0 else 0
  if n == 0 or n * n != num_slots:
    raise ValueError(f'{what} must be a perfect square n² (product keys pair n sub-keys '
                     f'with n), got {num_slots!r}; e.g. {max(n, 1) ** 2} or {(n + 1) ** 2}')
  return n


def product_top_k(s1: Array, s2: Array, k: int) -> tuple[Array, Array]:
  """Top-k of s1[i] + s2[j] over all n² pairs, without forming them.

  s1, s2 [..., n] -> (scores [..., k] descending, indices [..., k] = i·n + j, int32).
  Needs k ≤ n.
  """
  n = s1.shape[-1]
  v1, i1 = jax.lax.top_k(s1, k)
  v2, i2 = jax.lax.top_k(s2, k)
  candidates = (v1[..., :, None] + v2[..., None, :]).reshape(*v1.shape[:-1], k * k)
  scores, best = jax.lax.top_k(candidates, k)
  rows = jnp.take_along_axis(i1, best // k, axis=-1)
  cols = jnp.take_along_axis(i2, best % k, axis=-1)
  return scores, (rows * n + cols).astype(jnp.int32)


def read(scores: Array, indices: Array, values: Array) -> Array:
  """`y = Σ_h Σ_j softmax_j(scores[h]) V[indices[h, j]]`.

  scores, indices [..., H, k], values [N, d_v] -> [..., d_v] (heads summed).
  """
  weights = jax.nn.softmax(scores, axis=-1)
  rows = jnp.take(values, indices, axis=0)  # [..., H, k, d_v]
  return jnp.einsum('...hk,...hkv->...v', weights.astype(values.dtype), rows)


class ProductKeyMemory(nn.Module):
  """The product-key memory layer (equations in the module docstring).

  Params: `query/kernel` [D, H·d_k] (no bias), `query_norm/{scale,bias}` [H·d_k]
  when query_norm='layer' (the paper's BatchNorm, without batch statistics),
  `sub_keys` [H, 2, n, d_k/2] (K1 = [h, 0], K2 = [h, 1]), `values` [N, d_v],
  `out/{kernel,bias}` [d_v, out_features] when out_features is set.

  Sub-keys start at N(0, 2/d_k), so with a normalised query each half-score starts
  near N(0, 1); values at N(0, 1/d_v), as in the paper's code.

  `__call__(x, return_selection=False)`: x [..., D] -> y [..., D_out], plus
  {'indices' [..., H, k] int32, 'weights' [..., H, k]} when return_selection.
  """

  num_slots: int
  key_dim: int = 256
  num_heads: int = 4
  top_k: int = 32
  value_size: int | None = None
  out_features: int | None = None
  query_norm: str = 'layer'
  values_init: Any = None

  @nn.compact
  def __call__(self, x: Array, return_selection: bool = False):
    n = num_sub_keys(self.num_slots)
    if self.key_dim % 2:
      raise ValueError(f'key_dim must be even (two halves per query), got {self.key_dim}')
    if not 0 < self.top_k <= n:
      raise ValueError(f'top_k must be in [1, √num_slots = {n}], got {self.top_k}')
    if self.query_norm not in QUERY_NORMS:
      raise ValueError(f'query_norm must be one of {QUERY_NORMS}, got {self.query_norm!r}')
    half, value_size = self.key_dim // 2, self.value_size or x.shape[-1]

    q = nn.Dense(self.num_heads * self.key_dim, use_bias=False, name='query')(x)
    if self.query_norm == 'layer':
      q = nn.LayerNorm(name='query_norm')(q)
    q = q.reshape(*q.shape[:-1], self.num_heads, 2, half)
    sub_keys = self.param('sub_keys', nn.initializers.normal(stddev=half ** -0.5),
                          (self.num_heads, 2, n, half))
    # Top-k in at least float32: bf16 scores tie often enough to change the selection.
    dtype = jnp.promote_types(q.dtype, jnp.float32)
    s = jnp.einsum('...hcd,hcnd->...hcn', q, sub_keys, preferred_element_type=dtype)
    scores, indices = product_top_k(s[..., 0, :], s[..., 1, :], self.top_k)

    values = self.param('values',
                        self.values_init or nn.initializers.normal(stddev=value_size ** -0.5),
                        (self.num_slots, value_size))
    y = read(scores, indices, values)
    if self.out_features:
      y = nn.Dense(self.out_features, name='out')(y)
    if not return_selection:
      return y
    return y, {'indices': indices, 'weights': jax.nn.softmax(scores, axis=-1)}
