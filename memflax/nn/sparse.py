"""Sparse top-M attention and NTM addressing: each query attends to its M best positions.

Seed equation, for query i over positions j = 1..N with scores s_ij:
  S_i  = the M positions with the highest s_ij          (jax.lax.top_k)
  α_ij = exp(s_ij) / Σ_{k∈S_i} exp(s_ik)  for j ∈ S_i,  α_ij = 0 otherwise
  y_i  = Σ_{j∈S_i} α_ij x_j
With M = N this is ordinary softmax attention. Because α is a function of the
selected scores only, gradients reach s_ij just for j ∈ S_i (the selection itself
is piecewise constant and has no gradient, as in Rae et al. 2016, "Scaling
Memory-Augmented Neural Networks with Sparse Reads and Writes").

`sparse_dot_product_attention` takes and returns what
memflax.nn.attention.dot_product_attention does (masks True = attend; a query with
every key masked gets all-zero weights), so it can replace it in a multi-head layer.

Sparse weightings travel as (indices [..., M], weights [..., M]) pairs; `densify`
turns one into the dense [..., N] form with exact zeros off the support. NTM reads
and writes gather/scatter only the M selected memory rows, so every other row of
memory is passed through bit-for-bit. Shapes use B batch, H heads, N memory slots
(or keys), W slot width, M = min(m, N) selected positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memflax.nn import attention
from memflax.nn import memory as mem

Array = jax.Array


def _selected_softmax(values: Array) -> Array:
  """Softmax over the last axis where −inf marks a disallowed entry (weight exactly 0).

  values [..., M] -> [..., M] in values.dtype; a row with no allowed entry is all zeros.
  """
  # Normalise in at least f32 so bf16 scores still sum to 1.
  x = values.astype(jnp.promote_types(values.dtype, jnp.float32))
  valid = x > -jnp.inf
  # top_k sorts descending, so entry 0 is the row maximum.
  x_max = jax.lax.stop_gradient(jnp.where(valid[..., :1], x[..., :1], 0.0))
  # Feeding the max (not −inf) into exp keeps the unused where-branch finite, so
  # gradients of masked entries are exact zeros rather than NaN.
  e = jnp.where(valid, jnp.exp(jnp.where(valid, x, x_max) - x_max), 0.0)
  total = jnp.sum(e, axis=-1, keepdims=True)
  return (e / jnp.where(total > 0, total, 1.0)).astype(values.dtype)


def top_m(scores: Array, m: int, mask: Array | None = None) -> tuple[Array, Array]:
  """Selects the M highest scores and softmax-renormalises over them.

  scores [..., N], mask (bool, True = allowed) broadcastable to scores ->
  (indices [..., M] int32, weights [..., M]) with M = min(m, N), highest score first.
  Disallowed positions are never preferred to allowed ones; when fewer than M are
  allowed, the surplus selected entries get weight exactly 0, and a row with none
  allowed gets all-zero weights (so its attention output is 0 rather than NaN).
  """
  if m < 1:
    raise ValueError(f'top_m needs m >= 1, got {m}')
  m = min(m, scores.shape[-1])
  if mask is not None:
    scores = jnp.where(mask, scores, -jnp.inf)
  values, indices = jax.lax.top_k(scores, m)
  return indices, _selected_softmax(values)


def densify(indices: Array, weights: Array, n: int) -> Array:
  """Scatters a sparse weighting into dense form.

  indices [..., M] (distinct along the last axis), weights [..., M] -> [..., n],
  exactly zero outside `indices`.
  """
  dense = jnp.zeros((*weights.shape[:-1], n), weights.dtype)
  return jnp.put_along_axis(dense, indices, weights, axis=-1, inplace=False)


def top_m_softmax(scores: Array, m: int, mask: Array | None = None) -> Array:
  """Dense-shaped top-M softmax: α_ij as in the module docstring.

  scores [..., N], mask (bool, True = allowed) broadcastable to scores -> weights
  [..., N] with at most M = min(m, N) nonzeros per row, each nonzero row summing to 1.
  """
  indices, weights = top_m(scores, m, mask)
  return densify(indices, weights, scores.shape[-1])


def top_m_renormalize(w: Array, m: int) -> tuple[Array, Array]:
  """Keeps the M largest entries of a weighting and rescales them to sum to 1.

  w [..., N] (nonnegative) -> (indices [..., M], weights [..., M]),
  weights_j = w_j / Σ_{k∈S} w_k. For w = softmax(z) this equals top-M softmax of z.
  """
  m = min(m, w.shape[-1])
  values, indices = jax.lax.top_k(w, m)
  total = jnp.sum(values, axis=-1, keepdims=True)
  return indices, values / jnp.where(total > 0, total, 1.0)


def _top_m_attention(query: Array, key: Array, value: Array, m: int,
                     mask: Array | None) -> tuple[Array, Array, Array]:
  """-> (output [..., Tq, dv], indices [..., Tq, M], weights [..., Tq, M])."""
  # Logits and weights in at least float32, as memflax.nn.attention does: bf16
  # logits lose the small differences that decide both the top-M set and α.
  dtype = jnp.promote_types(jnp.result_type(query, key), jnp.float32)
  logits = jnp.einsum('...qd,...kd->...qk', query, key,
                      preferred_element_type=dtype) / np.sqrt(query.shape[-1]).astype(dtype)
  if mask is not None:
    attention.check_mask(mask, logits.shape)  # the dense attention's mask rules, same error
  indices, weights = top_m(logits, m, mask)
  picked = jnp.take_along_axis(value[..., None, :, :], indices[..., None], axis=-2)
  out = jnp.einsum('...qm,...qmd->...qd', weights.astype(value.dtype), picked)
  return out, indices, weights


def sparse_attention(q: Array, k: Array, v: Array, m: int, mask: Array | None = None) -> Array:
  """Scaled dot-product attention restricted to each query's top-M keys.

  y_i = Σ_{j∈S_i} α_ij v_j with α = top-M softmax of s_ij = q_i·k_j / √d. Leading
  axes are free, so [B, Tq, d] and multi-head [B, H, Tq, d] both work.

  q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv], mask (bool, True = attend)
  [Tq, Tk] or of the scores' rank, each axis 1 or equal to [..., Tq, Tk]
  (memflax.nn.attention.check_mask; other shapes raise ValueError)
  -> [..., Tq, dv] in v's dtype. Only the M
  selected value rows are gathered per query, so the weighted sum costs Tq·M·dv
  instead of Tq·Tk·dv. With m ≥ Tk this is softmax(QKᵀ/√d)V.
  """
  return _top_m_attention(q, k, v, m, mask)[0]


def sparse_dot_product_attention(query: Array, key: Array, value: Array,
                                 mask: Array | None = None, *, m: int) -> tuple[Array, Array]:
  """Drop-in for memflax.nn.attention.dot_product_attention with top-M attention.

  Same arguments and returns, so `functools.partial(sparse_dot_product_attention,
  m=M)` can stand wherever that function is called: query [..., Tq, d_k], key
  [..., Tk, d_k], value [..., Tk, d_v], mask bool [Tq, Tk] or of the logits'
  rank, each axis 1 or equal to [..., Tq, Tk] -> (output [..., Tq, d_v] in
  value's dtype, weights [..., Tq, Tk] with at most M nonzeros per query; all
  zero for a query whose keys are all masked).
  """
  out, indices, weights = _top_m_attention(query, key, value, m, mask)
  return out, densify(indices, weights, key.shape[-2])


def sparse_content_weighting(memory: Array, keys: Array, beta: Array,
                             m: int) -> tuple[Array, Array]:
  """Sparse NTM content addressing: top-M softmax of β · cos(k, M_j) (Graves §3.3.1).

  memory [B,N,W], keys [B,H,W], beta [B,H] -> (indices [B,H,M], weights [B,H,M]).
  With m ≥ N, `densify` of the result equals memflax.nn.memory.content_weighting.
  """
  return top_m(beta[..., None] * mem.cosine_similarity(keys, memory), m)


def sparse_address(memory: Array, w_prev: Array, keys: Array, beta: Array, gate: Array,
                   shift: Array, gamma: Array, m: int) -> tuple[Array, Array]:
  """NTM addressing with a sparse content step and a sparse result.

    w^c = top-M softmax(β · cos(k, M_j))           (sparse_content_weighting)
    w   = sharpen(shift(g · w^c + (1 − g) · w_{t-1}), γ)   (memflax.nn.memory)
    out = top-M renormalisation of w               (top_m_renormalize)

  Interpolation and shift spread the mass over up to (2M)·S slots, so the final
  top-M step restores exactly M. Because sharpen is softmax(γ log w̃), that step is
  the same top-M softmax again, applied to γ log w̃. With m ≥ N this is exactly
  memflax.nn.memory.address (up to rounding).

  memory [B,N,W], w_prev [B,H,N], keys [B,H,W], beta/gate/gamma [B,H], shift [B,H,S]
  -> (indices [B,H,M], weights [B,H,M]).
  """
  c_idx, c_w = sparse_content_weighting(memory, keys, beta, m)
  w = mem.interpolate(densify(c_idx, c_w, memory.shape[-2]), w_prev, gate)
  w = mem.sharpen(mem.circular_shift(w, shift), gamma)
  return top_m_renormalize(w, m)


def _gather_rows(memory: Array, indices: Array) -> Array:
  """memory [B,N,W], indices [B,H,M] -> rows [B,H,M,W]."""
  return jax.vmap(lambda mem_b, idx_b: mem_b[idx_b])(memory, indices)


def sparse_read(memory: Array, indices: Array, weights: Array) -> Array:
  """`r = Σ_{j∈S} w_j M_j`, touching only the selected rows.

  memory [B,N,W], indices/weights [B,H,M] -> [B,H,W].
  """
  return jnp.einsum('bhm,bhmw->bhw', weights, _gather_rows(memory, indices))


def sparse_write(memory: Array, indices: Array, weights: Array, erase: Array,
                 add: Array) -> Array:
  """Erase then add on the selected rows only: for j ∈ ∪_h S_h,

    M̃_j = M_j ∘ Π_{h: j∈S_h} (1 − w_hj e_h) + Σ_{h: j∈S_h} w_hj a_h,

  which is memflax.nn.memory.write with w_hj = 0 off S_h (so heads commute, as there).
  Rows outside every S_h are never read or written, hence bit-for-bit unchanged.

  memory [B,N,W], indices [B,H,M] (distinct within each head, as top_k gives),
  weights [B,H,M], erase [B,H,W] (in [0,1]), add [B,H,W] -> [B,N,W].
  """
  num_heads = indices.shape[1]

  def one(mem_b, idx_b, w_b, erase_b, add_b):  # [N,W], [H,M], [H,M], [H,W], [H,W]
    # Heads may pick the same slot: erasing head by head (gather → scale → scatter)
    # multiplies their factors, where a single scatter-set would keep only one.
    for h in range(num_heads):  # H is small and static
      keep = 1.0 - w_b[h, :, None] * erase_b[h, None, :]
      rows = mem_b[idx_b[h]] * keep
      mem_b = mem_b.at[idx_b[h]].set(rows.astype(mem_b.dtype), unique_indices=True)
    # Scatter-add sums duplicate slots, matching Σ_h.
    added = (w_b[..., None] * add_b[:, None, :]).reshape(-1, mem_b.shape[-1])
    return mem_b.at[idx_b.reshape(-1)].add(added.astype(mem_b.dtype))

  return jax.vmap(one)(memory, indices, weights, erase, add)
