"""kNN memory over past segments (Wu et al. 2022, "Memorizing Transformers").

A layer attends locally (causally, within the segment) and also to the top-k
(key, value) pairs retrieved from a non-differentiable store of the keys and
values of earlier segments; a learned per-head gate mixes the two.

Shapes: B batch, H heads, T steps of the current segment, N store slots,
d_h per-head width, k retrieved pairs per query.

  store    K_mem, V_mem [B, H, N, d_h], count [B] int32 (writes since the last reset)
  valid    slot j is valid iff j < min(count, N); write i (0-based) goes to slot i mod N
  scores   s_j = q · K_mem[j]  (−∞ on invalid slots)        q [B, H, T, d_h]
  retrieve J = top-k_j s_j  (exact `lax.top_k` or `lax.approx_max_k`)
  memory   mem = Σ_{j∈J valid} softmax_J(τ_h s_j) V_mem[j]   (0 if no j ∈ J is valid)
  local    loc = Σ_{t'≤t} softmax(τ_h q_t · k_t') v_t'
  mix      out_h = g_h mem_h + (1 − g_h) loc_h,   g_h = sigmoid(b_h)
  output   y = Concat_h(out_h) W^O

τ_h is a learned per-head temperature, τ_h = τ_0 exp(s_h) with s_h initialised to 0
and τ_0 = √d_h when queries and keys are L2-normalised (unit vectors give q·k of
spread ~1/√d_h; τ_0 brings the logits back to spread ~1, as 1/√d_h does for
unnormalised ones) and τ_0 = 1/√d_h otherwise (plain scaled dot product).
Normalised keys (the paper's choice) keep keys written many steps ago comparable
with today's queries even as the projections drift during training.

The store receives stop_gradient'ed keys and values: no gradient reaches it, and
the memory attention's gradient flows only into the current queries (and the gate
and temperature).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn import attention as attn

Array = jax.Array

MEMORY = 'memory'  # the variable collection holding the store


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
  """x / max(‖x‖₂, eps) over the last axis; eps keeps an all-zero vector finite (zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def append(keys_store: Array, values_store: Array, count: Array, new_keys: Array,
           new_values: Array) -> tuple[Array, Array, Array]:
  """Ring-buffer write of T new (key, value) pairs per batch row and head.

  keys_store, values_store [B, H, N, d], count int32 [B], new_keys, new_values
  [B, H, T, d] -> (keys_store, values_store, count + T). Write i of row b (i counted
  since the last reset) lands in slot i mod N, so write count_b + t goes to slot
  (count_b + t) mod N. When T > N the first T − N new pairs would be overwritten
  within this same call; they are dropped up front, so the M = min(T, N) slots
  written are distinct and the scatter's result does not depend on write order.
  """
  length, slots = new_keys.shape[-2], keys_store.shape[-2]
  kept = min(length, slots)  # static
  new_keys = new_keys[..., length - kept:, :].astype(keys_store.dtype)
  new_values = new_values[..., length - kept:, :].astype(values_store.dtype)
  # Slot of each kept write, per row: [B, M], all distinct within a row.
  first = count + (length - kept)
  slot = (first[:, None] + jnp.arange(kept, dtype=count.dtype)[None, :]) % slots

  def write(store, index, new):  # store [H, N, d], index [M], new [H, M, d]
    return store.at[:, index].set(new, unique_indices=True)

  keys_store = jax.vmap(write)(keys_store, slot, new_keys)
  values_store = jax.vmap(write)(values_store, slot, new_values)
  return keys_store, values_store, count + length


def num_valid(count: Array, memory_size: int) -> Array:
  """Valid slots per row, min(count, N): [B] int32."""
  return jnp.minimum(count, memory_size)


def retrieve(queries: Array, keys_store: Array, values_store: Array, count: Array,
             top_k: int, approximate: bool = False,
             recall_target: float = 0.95) -> tuple[Array, Array, Array, Array]:
  """Top-k inner-product search of each query over its row's (and head's) store.

  queries [B, H, T, d], keys_store, values_store [B, H, N, d], count int32 [B]
  -> (keys [B, H, T, k, d], values [B, H, T, k, d], scores [B, H, T, k],
  valid bool [B, H, T, k]), best first.

    s_j = q · K[j] for slots j < min(count, N), −∞ otherwise;  J = top-k_j s_j.

  `approximate` uses `lax.approx_max_k` (TPU's approximate top-k; elsewhere it
  falls back to an exact sort-and-slice) with `recall_target` in (0, 1]; its
  documented constraints are k ≤ N and a floating operand. An entry is valid iff its
  slot holds a written pair; with fewer than k valid slots the tail is invalid (score
  −∞, arbitrary slot) and must be masked by the caller. The store gets no gradient.
  """
  slots = keys_store.shape[-2]
  if not 0 < top_k <= slots:
    raise ValueError(f'model.top_k must be in [1, memory_size = {slots}], got {top_k}')
  keys_store = jax.lax.stop_gradient(keys_store)
  values_store = jax.lax.stop_gradient(values_store)
  dtype = jnp.promote_types(jnp.result_type(queries, keys_store), jnp.float32)
  scores = jnp.einsum('bhtd,bhnd->bhtn', queries, keys_store, preferred_element_type=dtype)
  filled = jnp.arange(slots)[None, :] < num_valid(count, slots)[:, None]  # [B, N]
  scores = jnp.where(filled[:, None, None, :], scores, -jnp.inf)
  if approximate:
    top_scores, index = jax.lax.approx_max_k(scores, top_k, recall_target=recall_target)
  else:
    top_scores, index = jax.lax.top_k(scores, top_k)
  # Both conditions: the index test is the definition, the score test guards an
  # approximate search that may pad a short result with an arbitrary (valid) slot.
  valid = (index < num_valid(count, slots)[:, None, None, None]) & (top_scores > -jnp.inf)

  def gather(store, idx):  # store [N, d], idx [T, k] -> [T, k, d]
    return store[idx]

  gather = jax.vmap(jax.vmap(gather))
  return gather(keys_store, index), gather(values_store, index), top_scores, valid


def memory_attention(queries: Array, keys: Array, values: Array, valid: Array,
                     scale: Array | float) -> Array:
  """Attention of each query over its own k retrieved pairs.

  queries [B, H, T, d], keys, values [B, H, T, k, d], valid bool [B, H, T, k],
  scale (τ) broadcastable to [B, H, T, 1] (e.g. [H, 1, 1])
  -> [B, H, T, d] = Σ_j softmax_j(τ q · K_j | valid) V_j; a query with no valid pair
  reads exactly 0. The scores are recomputed from the retrieved keys (rather than
  taken from the search) so the gradient reaches q through ordinary einsums.
  """
  # attn.attention_weights divides by √d; fold τ√d into the query to get τ q·k.
  scaled = queries * (jnp.asarray(scale) * math.sqrt(queries.shape[-1]))
  out, _ = attn.dot_product_attention(scaled[..., None, :], keys, values, valid[..., None, :])
  return out[..., 0, :]


def validate(num_heads: int, memory_size: int, top_k: int, approximate: bool,
             recall_target: float, features: int | None = None,
             head_dim: int | None = None) -> None:
  """Raises ValueError('model.<field> ...', one line) on a configuration the layer
  cannot run. approx_max_k's documented limits are k ≤ N (covered by the top_k
  check, which applies in both modes) and recall_target ∈ (0, 1]."""
  if not (isinstance(num_heads, int) and num_heads > 0):
    raise ValueError(f'model.num_heads must be a positive integer, got {num_heads!r}')
  if head_dim is None and features is not None and features % num_heads:
    raise ValueError(f'model.num_heads ({num_heads}) must divide the width {features}')
  if head_dim is not None and not (isinstance(head_dim, int) and head_dim > 0):
    raise ValueError(f'model.head_dim must be a positive integer, got {head_dim!r}')
  if not (isinstance(memory_size, int) and memory_size >= 0):
    raise ValueError(f'model.memory_size must be an integer >= 0 (0: no memory), '
                     f'got {memory_size!r}')
  if not (isinstance(top_k, int) and top_k >= 1):
    raise ValueError(f'model.top_k must be an integer >= 1, got {top_k!r}')
  if memory_size and top_k > memory_size:
    raise ValueError(f'model.top_k ({top_k}) must not exceed model.memory_size '
                     f'({memory_size})')
  if approximate and not 0.0 < recall_target <= 1.0:
    raise ValueError(f'model.recall_target must be in (0, 1] for approximate search, '
                     f'got {recall_target!r}')


class KNNMemoryAttention(nn.Module):
  """Local causal attention plus gated attention over a kNN store of past segments.

  x [B, T, D], reset bool [B] | None -> y [B, T, D_out] (D_out = out_features or D);
  equations in the module docstring. Params: `query`, `key`, `value` kernels
  [D, H·d_h] (head i in columns i·d_h..(i+1)·d_h), `out` [H·d_h, D_out], `log_scale`
  [H] (temperature s_h), `gate` [H] (b_h, g_h = sigmoid(b_h), initially 0.5).

  The store is the variable collection 'memory': `keys`, `values` [B, H, N, d_h]
  float32 and `count` [B] int32, all zeros initially and batch-leading. Per call:
  rows with reset=True are emptied (count 0), then queries retrieve from the store
  (past segments only; the current segment is covered by local attention), then,
  only when 'memory' is mutable (and not during init, which leaves the store at
  zeros), the segment's keys and values are appended. Applied with no 'memory'
  variables and the collection immutable, the layer reads an empty store.

  memory_size = 0: no store, no retrieval; out_h = loc_h. The parameters are the
  same (`gate` exists, unused), so memory on/off is a config switch at equal size.

  Sown to 'intermediates': `gate` [H], `hit_score` [H] (mean q·k over valid retrieved
  pairs; cosine similarity when normalised), `occupancy` [] (mean over rows of
  min(count, N)/N at retrieval).
  """

  num_heads: int
  head_dim: int | None = None
  memory_size: int = 1024
  top_k: int = 32
  approximate: bool = False
  normalize_keys: bool = True
  recall_target: float = 0.95
  out_features: int | None = None

  @nn.compact
  def __call__(self, x: Array, reset: Array | None = None, train: bool = False) -> Array:
    del train  # no dropout inside the layer; kept for a uniform block interface
    batch, length, features = x.shape
    validate(self.num_heads, self.memory_size, self.top_k, self.approximate,
             self.recall_target, features, self.head_dim)
    heads = self.num_heads
    head_dim = self.head_dim or features // heads

    def project(name):
      y = nn.Dense(heads * head_dim, use_bias=False, name=name)(x)
      return jnp.swapaxes(y.reshape(batch, length, heads, head_dim), 1, 2)  # [B, H, T, d]

    q, k, v = project('query'), project('key'), project('value')
    if self.normalize_keys:
      q, k = l2_normalize(q), l2_normalize(k)
    log_scale = self.param('log_scale', nn.initializers.zeros, (heads,))
    base = math.sqrt(head_dim) if self.normalize_keys else 1.0 / math.sqrt(head_dim)
    scale = (base * jnp.exp(log_scale))[:, None, None]  # τ_h, [H, 1, 1]
    gate_bias = self.param('gate', nn.initializers.zeros, (heads,))

    # Local causal attention with the same temperature (the helper divides by √d).
    local, _ = attn.dot_product_attention(q * (scale * math.sqrt(head_dim)), k, v,
                                          attn.causal_mask(length))
    if self.memory_size == 0:
      mixed = local
    else:
      shape = (batch, heads, self.memory_size, head_dim)
      writable = self.is_mutable_collection(MEMORY)
      if writable or self.has_variable(MEMORY, 'count'):
        keys = self.variable(MEMORY, 'keys', jnp.zeros, shape, jnp.float32)
        values = self.variable(MEMORY, 'values', jnp.zeros, shape, jnp.float32)
        count = self.variable(MEMORY, 'count', jnp.zeros, (batch,), jnp.int32)
        stored = keys.value, values.value, count.value
      else:
        # No store passed and none to write (e.g. a caller that knows only 'params'):
        # read an empty one, so the layer degrades to gated local attention.
        stored = jnp.zeros(shape), jnp.zeros(shape), jnp.zeros((batch,), jnp.int32)
      current = stored[2]
      if reset is not None:
        current = jnp.where(reset, 0, current)
      got_k, got_v, scores, valid = retrieve(q, stored[0], stored[1], current,
                                             self.top_k, self.approximate, self.recall_target)
      memory = memory_attention(q, got_k, got_v, valid, scale)
      gate = jax.nn.sigmoid(gate_bias)
      mixed = gate[:, None, None] * memory + (1.0 - gate[:, None, None]) * local

      hits = jnp.sum(valid, axis=(0, 2, 3))
      self.sow('intermediates', 'gate', gate)
      self.sow('intermediates', 'hit_score', jnp.sum(jnp.where(valid, scores, 0.0),
                                                     axis=(0, 2, 3)) / jnp.maximum(hits, 1))
      self.sow('intermediates', 'occupancy',
               jnp.mean(num_valid(current, self.memory_size) / self.memory_size))

      if writable and not self.is_initializing():
        keys.value, values.value, count.value = append(
            keys.value, values.value, current, jax.lax.stop_gradient(k),
            jax.lax.stop_gradient(v))

    concat = jnp.swapaxes(mixed, 1, 2).reshape(batch, length, heads * head_dim)
    return nn.Dense(self.out_features or features, use_bias=False, name='out')(concat)
