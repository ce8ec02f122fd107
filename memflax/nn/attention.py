"""Attention and Transformer blocks (Vaswani et al. 2017, "Attention Is All You Need").

Pure functions for the equations plus flax.linen modules that own the weights.
Shapes use B batch, T time (Tq queries, Tk keys), D model width, H heads,
d_k/d_v per-head key/value width. Equations (seed 003 §4.1; Vaswani et al. §3):

  attention   Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V
  multi-head  MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
              head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
  FFN         FFN(x) = max(0, x W_1 + b_1) W_2 + b_2
  positions   PE(pos, 2i) = sin(pos / 10000^(2i/D)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/D))

Masks are boolean, True where a query may attend to a key. A mask is either
[Tq, Tk] (the same for every batch item and head, like `causal_mask`) or has the
logits' full rank, each axis 1 or equal to the logits' (`padding_mask` gives
[B, 1, 1, Tk] for logits [B, H, Tq, Tk]); anything else raises (see `check_mask`).
The blocks are pre-LN (Xiong et al. 2020):
x + Dropout(Sublayer(LayerNorm(x))), which trains without a learning-rate warm-up;
a stack of them needs one final LayerNorm on its output.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def causal_mask(length: int) -> Array:
  """[T, T] bool, True on and below the diagonal: query t sees keys 0..t only.

  Rank 2, so it applies alike to every batch item and head.
  """
  return jnp.tril(jnp.ones((length, length), jnp.bool_))


def padding_mask(valid: Array) -> Array:
  """Key padding mask. valid [B, Tk] bool (True = real step) -> [B, 1, 1, Tk].

  Laid out as the multi-head logits [B, H, Tq, Tk] are, so it broadcasts over
  heads and queries by construction, and `causal_mask(T) & padding_mask(valid)`
  is [B, 1, T, T]. (A [B, 1, Tk] mask would be right-aligned against those
  logits, landing the batch axis on the head axis.) Any leading axes of `valid`
  are kept: [..., Tk] -> [..., 1, 1, Tk]. For single-head logits [B, Tq, Tk]
  pass `valid[:, None, :]` instead.
  """
  return valid[..., None, None, :].astype(jnp.bool_)


def check_mask(mask: Array, logits_shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `mask` is [Tq, Tk] or has the rank of the logits
  [..., Tq, Tk], each axis either 1 or equal to the logits' axis.

  Plain broadcasting would also accept a lower-rank mask by right-aligning it,
  which silently applies a per-batch [B, 1, Tk] mask per head whenever B = H;
  requiring the full rank rules that out. Shapes are static, so this costs
  nothing under jit.
  """
  shape, target = tuple(mask.shape), tuple(logits_shape)
  ranks_ok = len(shape) == 2 or len(shape) == len(target)
  if ranks_ok and len(shape) <= len(target) and all(
      m in (1, n) for m, n in zip(shape[::-1], target[::-1])):
    return
  raise ValueError(
      f'attention mask of shape {shape} does not fit logits of shape {target}: expected '
      f'[Tq, Tk] = {target[-2:]} or rank {len(target)} with each axis 1 or equal to '
      f'{target} (padding_mask(valid) gives [B, 1, 1, Tk] for logits [B, H, Tq, Tk])')


def attention_weights(query: Array, key: Array, mask: Array | None = None) -> Array:
  """`softmax(Q Kᵀ / √d_k)` over keys, with masked-out keys given weight exactly 0.

  query [..., Tq, d_k], key [..., Tk, d_k], mask bool [Tq, Tk] or of the logits'
  rank with axes 1 or equal to [..., Tq, Tk] (see `check_mask`; other shapes raise
  ValueError) -> weights [..., Tq, Tk] in float32 (or wider, if the inputs are).
  A query whose keys are all masked gets an all-zero row, so it reads nothing
  rather than the uniform average a plain −∞ fill would give (or NaN).
  """
  # Softmax in at least float32: bf16 logits lose the small differences that
  # decide the weights, and exp overflows sooner.
  dtype = jnp.promote_types(jnp.result_type(query, key), jnp.float32)
  logits = jnp.einsum('...qd,...kd->...qk', query, key,
                      preferred_element_type=dtype) / np.sqrt(query.shape[-1]).astype(dtype)
  if mask is None:
    return jax.nn.softmax(logits, axis=-1)
  check_mask(mask, logits.shape)
  mask = jnp.broadcast_to(mask, logits.shape)
  # finfo.min instead of −∞ keeps fully masked rows finite (their max is then
  # finfo.min too, so exp gives 1s, which the final `where` zeroes).
  logits = jnp.where(mask, logits, jnp.finfo(dtype).min)
  logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  unnormalised = jnp.where(mask, jnp.exp(logits), 0.0)
  total = jnp.sum(unnormalised, axis=-1, keepdims=True)
  return unnormalised / jnp.where(total > 0, total, 1.0)


def dot_product_attention(query: Array, key: Array, value: Array,
                          mask: Array | None = None) -> tuple[Array, Array]:
  """`Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V` (seed 003 §4.1.1).

  query [..., Tq, d_k], key [..., Tk, d_k], value [..., Tk, d_v], mask bool
  [Tq, Tk] or of the logits' rank, each axis 1 or equal to [..., Tq, Tk] (e.g.
  `padding_mask` [B, 1, 1, Tk] for [B, H, ...] inputs; `check_mask` raises
  ValueError otherwise) -> (output [..., Tq, d_v] in value's dtype, weights
  [..., Tq, Tk]).
  """
  weights = attention_weights(query, key, mask)
  out = jnp.einsum('...qk,...kd->...qd', weights.astype(value.dtype), value)
  return out, weights


def sinusoidal_encoding(length: int, features: int, dtype=jnp.float32) -> Array:
  """Fixed positional encoding table [T, D] (Vaswani et al. §3.5).

  PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(pos / 10000^(2i/D)).
  Built in float64 NumPy at trace time, so it enters the graph as a constant.
  """
  pos = np.arange(length, dtype=np.float64)[:, None]
  two_i = np.arange(0, features, 2, dtype=np.float64)[None, :]
  angle = pos / np.power(10000.0, two_i / features)
  table = np.zeros((length, features), np.float64)
  table[:, 0::2] = np.sin(angle)
  table[:, 1::2] = np.cos(angle[:, :features // 2])  # odd D has one more sin than cos column
  return jnp.asarray(table, dtype)


def rotary_embedding(x: Array, positions: Array, base: float = 10000.0) -> Array:
  """Rotary position embedding (Su et al. 2021, "RoFormer", eq. 34), half-split pairs:
  with d = x.shape[-1] (even), θ_i = base^(−2i/d) and x = [x₁, x₂] (halves of d/2),

    RoPE(x, p) = [x₁ cos pθ − x₂ sin pθ,  x₁ sin pθ + x₂ cos pθ]

  so q_m · k_n depends on the positions only through m − n. x [..., T, d], positions
  [T] (int, may be traced: a KV cache's offset) -> [..., T, d] in x's dtype.
  """
  dim = x.shape[-1]
  if dim % 2:
    raise ValueError(f'rotary positions need an even head width, got {dim}')
  inverse = base ** (-jnp.arange(0, dim // 2, dtype=jnp.float32) * 2.0 / dim)
  angle = positions.astype(jnp.float32)[:, None] * inverse[None, :]  # [T, d/2]
  cos, sin = jnp.cos(angle).astype(x.dtype), jnp.sin(angle).astype(x.dtype)
  x1, x2 = x[..., :dim // 2], x[..., dim // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class LearnedPositionalEmbedding(nn.Module):
  """Trained positional embedding table P [max_len, D]; `__call__(T, offset=0)` returns
  P[offset:offset + T] ([T, D]). `offset` may be traced (a KV cache's position); a
  traced offset is not range-checked, and jax clamps it to max_len − T."""

  max_len: int
  features: int
  embedding_init: nn.initializers.Initializer = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, length: int, offset: int | Array = 0) -> Array:
    if length > self.max_len:
      raise ValueError(f'sequence length {length} exceeds max_len {self.max_len}')
    table = self.param('embedding', self.embedding_init, (self.max_len, self.features))
    return jax.lax.dynamic_slice_in_dim(table, offset, length)


class MultiHeadAttention(nn.Module):
  """`MultiHead(Q, K, V) = Concat(head_1..head_h) W^O`,
  `head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)` (seed 003 §4.1.2).

  The h per-head projections are fused into one Dense each: `query/kernel`
  [D_q, h·d_k] holds W_i^Q in columns i·d_k..(i+1)·d_k (likewise `key`, `value`
  with [D_kv, h·d_k], [D_kv, h·d_v]); `out/kernel` is W^O [h·d_v, D_out].
  No biases by default, as in the equation. d_k = d_v = head_dim, which
  defaults to D_q / h so the cost matches one full-width head.

  Shapes: inputs_q [B, Tq, D_q], inputs_kv [B, Tk, D_kv] (None: self-attention),
  mask bool [Tq, Tk], [B, Tq, Tk] (the head axis is inserted here) or
  [B, H, Tq, Tk] (as `padding_mask` gives; used as is), each axis 1 or full
  size -> [B, Tq, D_out], D_out = out_features or D_q. The weights [B, H, Tq, Tk]
  are sown to the 'intermediates' collection as `attention_weights`.

  Incremental (autoregressive) self-attention: pass `cache`, a dict from
  `init_cache` with `key` [B, h, L, d_k], `value` [B, h, L, d_v] and `index`
  (int32 [], the number of steps already stored). The Tq new steps' keys and
  values are written at slots index..index+Tq−1, query i attends to slots
  0..index+i (its prefix and itself: the cache is causal by construction, and
  `mask`, if given, is [B, Tq, L] or [B, H, Tq, L], axes 1 or full size), and
  the call returns (output, cache with index + Tq). Writing past slot L−1 is not checked under
  jit (jax clamps the slot); size the cache for the whole sequence.

  `attention_fn` computes the per-head attention; pass
  `functools.partial(memflax.nn.sparse.sparse_dot_product_attention, m=M)` for
  top-M sparse attention.

  `rotary`: self-attention rotates each head's queries and keys by their positions
  (`rotary_embedding`; positions 0..T−1, or continuing from the cache's index), so the
  logits see relative positions only.
  """

  num_heads: int
  head_dim: int | None = None
  out_features: int | None = None
  use_bias: bool = False
  attention_fn: Callable | None = None
  rotary: bool = False

  def resolved_head_dim(self, features: int) -> int:
    """d_k = d_v for inputs of width `features`."""
    if self.head_dim is not None:
      return self.head_dim
    if features % self.num_heads:
      raise ValueError(f'width {features} is not divisible by num_heads {self.num_heads}; '
                       'set head_dim explicitly')
    return features // self.num_heads

  def init_cache(self, batch_size: int, max_length: int, features: int,
                 dtype=jnp.float32) -> dict:
    """Empty self-attention cache for inputs of width `features` (see the class docstring)."""
    shape = (batch_size, self.num_heads, max_length, self.resolved_head_dim(features))
    return {'key': jnp.zeros(shape, dtype), 'value': jnp.zeros(shape, dtype),
            'index': jnp.zeros((), jnp.int32)}

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | None = None,
               mask: Array | None = None, cache: dict | None = None):
    if cache is not None and inputs_kv is not None:
      raise ValueError('a cache is for self-attention only; pass inputs_kv=None')
    if self.rotary and inputs_kv is not None:
      raise ValueError('rotary positions are for self-attention only; pass inputs_kv=None')
    if inputs_kv is None:
      inputs_kv = inputs_q
    features = inputs_q.shape[-1]
    head_dim = self.resolved_head_dim(features)

    def project(x, name):
      y = nn.Dense(self.num_heads * head_dim, use_bias=self.use_bias, name=name)(x)
      # [B, T, h·d] -> [B, h, T, d]: head i is columns i·d..(i+1)·d of the kernel.
      return jnp.swapaxes(y.reshape(*y.shape[:-1], self.num_heads, head_dim), -2, -3)

    q = project(inputs_q, 'query')
    k = project(inputs_kv, 'key')
    v = project(inputs_kv, 'value')
    if self.rotary:
      positions = jnp.arange(q.shape[-2]) + (0 if cache is None else cache['index'])
      q, k = rotary_embedding(q, positions), rotary_embedding(k, positions)
    if cache is not None:
      k, v, mask, cache = _append_to_cache(cache, k, v, mask)
    if mask is not None and mask.ndim == q.ndim - 1 and mask.ndim > 2:
      # [B, Tq, Tk] has no head axis; a rank-2 mask needs none, and one of q's
      # rank already has it.
      mask = jnp.expand_dims(mask, -3)
    heads, weights = (self.attention_fn or dot_product_attention)(q, k, v, mask)
    self.sow('intermediates', 'attention_weights', weights)
    concat = jnp.swapaxes(heads, -2, -3).reshape(*heads.shape[:-3], heads.shape[-2], -1)
    out = nn.Dense(self.out_features or features, use_bias=self.use_bias, name='out')(concat)
    return out if cache is None else (out, cache)


def _append_to_cache(cache: dict, k: Array, v: Array, mask: Array | None):
  """Writes k, v [B, h, Tq, d] at the cache's index; returns the whole cache's keys and
  values [B, h, L, d], the mask ([Tq, L], or the caller's mask's rank) that hides the
  slots after each query's own position, and the advanced cache."""
  index = cache['index']
  key = jax.lax.dynamic_update_slice_in_dim(cache['key'], k.astype(cache['key'].dtype),
                                            index, axis=-2)
  value = jax.lax.dynamic_update_slice_in_dim(cache['value'], v.astype(cache['value'].dtype),
                                              index, axis=-2)
  steps, length = k.shape[-2], key.shape[-2]
  # Query i sits at position index + i; later slots are empty or (within this
  # call) in its future, and get weight exactly 0, as under `causal_mask`.
  visible = jnp.arange(length)[None, :] <= index + jnp.arange(steps)[:, None]
  mask = visible if mask is None else mask & visible
  return key, value, mask, {'key': key, 'value': value, 'index': index + steps}


class FeedForward(nn.Module):
  """Position-wise `FFN(x) = max(0, x W_1 + b_1) W_2 + b_2` (seed 003 §4.1.3).

  Params: `hidden/kernel` W_1 [D, d_ff], `hidden/bias` b_1 [d_ff],
  `output/kernel` W_2 [d_ff, D_out], `output/bias` b_2 [D_out].
  Shapes: x [..., D] -> [..., D_out], D_out = out_features or D.
  """

  d_ff: int
  out_features: int | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = jax.nn.relu(nn.Dense(self.d_ff, name='hidden')(x))
    return nn.Dense(self.out_features or x.shape[-1], name='output')(h)


class EncoderBlock(nn.Module):
  """Pre-LN Transformer encoder layer:

    x ← x + Dropout(MultiHead(LN(x), LN(x), LN(x); mask))
    x ← x + Dropout(FFN(LN(x)))

  Pass `mask=causal_mask(T)` for a causal (decoder-only) stack.
  Shapes: x [B, T, D], mask bool as MultiHeadAttention takes it ([T, T],
  [B, T, T] or [B, H, T, T], axes 1 or full size) -> [B, T, D].
  Dropout draws from the 'dropout' rng when `train`.

  Incremental decoding: with `cache` (from `init_cache`, see MultiHeadAttention)
  x holds the next T steps, attention is causal over the cached prefix and the
  call returns (y [B, T, D], the advanced cache). `rotary`: as MultiHeadAttention.
  """

  num_heads: int
  d_ff: int
  dropout_rate: float = 0.0
  head_dim: int | None = None
  rotary: bool = False

  def init_cache(self, batch_size: int, max_length: int, features: int,
                 dtype=jnp.float32) -> dict:
    """Empty self-attention cache for a block of width `features`."""
    return MultiHeadAttention(self.num_heads, self.head_dim, parent=None).init_cache(
        batch_size, max_length, features, dtype)

  @nn.compact
  def __call__(self, x: Array, mask: Array | None = None, train: bool = False,
               cache: dict | None = None):
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    h = nn.LayerNorm(name='attention_norm')(x)
    h = MultiHeadAttention(self.num_heads, self.head_dim, rotary=self.rotary,
                           name='attention')(h, mask=mask, cache=cache)
    if cache is not None:
      h, cache = h
    x = x + dropout(h)
    h = FeedForward(self.d_ff, name='ffn')(nn.LayerNorm(name='ffn_norm')(x))
    x = x + dropout(h)
    return x if cache is None else (x, cache)


class DecoderBlock(nn.Module):
  """Pre-LN Transformer decoder layer: causal self-attention, cross-attention, FFN.

    x ← x + Dropout(MultiHead(LN(x), LN(x), LN(x); causal ∧ self_mask))
    x ← x + Dropout(MultiHead(LN(x), m, m; cross_mask))
    x ← x + Dropout(FFN(LN(x)))

  m is the encoder output (already normalised by the encoder stack's final LN).
  Shapes: x [B, T, D], memory [B, S, D_m], self_mask bool [B, T, T] or
  [B, H, T, T] (e.g. `padding_mask(target_valid)`), cross_mask [B, T, S] or
  [B, H, T, S] (e.g. `padding_mask(source_valid)`), axes 1 or full size
  -> [B, T, D].
  """

  num_heads: int
  d_ff: int
  dropout_rate: float = 0.0
  head_dim: int | None = None

  @nn.compact
  def __call__(self, x: Array, memory: Array, self_mask: Array | None = None,
               cross_mask: Array | None = None, train: bool = False) -> Array:
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    mask = causal_mask(x.shape[-2])
    if self_mask is not None:
      mask = mask & self_mask
    h = nn.LayerNorm(name='self_attention_norm')(x)
    h = MultiHeadAttention(self.num_heads, self.head_dim, name='self_attention')(h, mask=mask)
    x = x + dropout(h)
    h = nn.LayerNorm(name='cross_attention_norm')(x)
    h = MultiHeadAttention(self.num_heads, self.head_dim, name='cross_attention')(
        h, memory, mask=cross_mask)
    x = x + dropout(h)
    h = FeedForward(self.d_ff, name='ffn')(nn.LayerNorm(name='ffn_norm')(x))
    return x + dropout(h)
