"""Memorizing Transformer (Wu et al. 2022): a causal Transformer with a kNN memory.

The pre-LN stack of memflax.models.transformer, except that in each block l listed
in `knn_blocks` the self-attention is memflax.nn.knn_memory.KNNMemoryAttention:

  x ← x + Dropout(KNNAttn(LN(x); reset))   l ∈ knn_blocks  (MultiHead(LN(x); causal) otherwise)
  x ← x + Dropout(FFN(LN(x)))

A long document is fed as consecutive segments [B, T, D_in]; each block in
`knn_blocks` keeps the keys and values of earlier segments in the 'memory'
variable collection (see KNNMemoryAttention), which the caller carries from one
call to the next (`mutable=['memory']`) and empties per row with `reset` [B] at a
document boundary. Every segment is embedded with positions 0..T−1: the store
carries content, not positions. The paper puts one memory layer near the top,
hence the default `knn_blocks` = (−2,) (the second-to-last block).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.models import transformer
from memflax.nn import attention as attn
from memflax.nn.knn_memory import KNNMemoryAttention, validate


class KNNBlock(nn.Module):
  """attn.EncoderBlock with KNNMemoryAttention as its attention sublayer (same
  parameter names: attention_norm, attention, ffn_norm, ffn).
  x [B, T, D], reset bool [B] | None -> [B, T, D]."""

  num_heads: int
  d_ff: int
  dropout_rate: float
  memory_size: int
  top_k: int
  approximate: bool
  normalize_keys: bool
  recall_target: float

  @nn.compact
  def __call__(self, x, reset=None, train: bool = False):
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    h = nn.LayerNorm(name='attention_norm')(x)
    h = KNNMemoryAttention(self.num_heads, None, self.memory_size, self.top_k,
                           self.approximate, self.normalize_keys, self.recall_target,
                           name='attention')(h, reset=reset, train=train)
    x = x + dropout(h)
    h = attn.FeedForward(self.d_ff, name='ffn')(nn.LayerNorm(name='ffn_norm')(x))
    return x + dropout(h)


class KNNEncoder(transformer.CausalEncoder):
  """transformer.CausalEncoder with KNNBlocks at `knn_blocks`: inputs [B, T, D_in],
  reset [B] | None -> h [B, T, d_model]. Embedding and positions are CausalEncoder's
  (`embed_inputs`, same parameter names, offset 0 for every segment)."""

  memory_size: int = 1024
  top_k: int = 32
  approximate: bool = False
  normalize_keys: bool = True
  recall_target: float = 0.95
  knn_blocks: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False, reset=None, cache=None):
    if cache is not None:
      raise NotImplementedError('knn_transformer has no incremental decoding')
    x = self.embed_inputs(inputs, train, 0, decoding=False)
    mask = attn.causal_mask(inputs.shape[-2])
    for layer in range(self.num_layers):
      if layer in self.knn_blocks:
        x = KNNBlock(self.num_heads, self.d_ff, self.dropout_rate, self.memory_size,
                     self.top_k, self.approximate, self.normalize_keys, self.recall_target,
                     name=f'layer_{layer}')(x, reset=reset, train=train)
      else:
        # With rotary positions the memory block stays position-free, like its store.
        x = attn.EncoderBlock(self.num_heads, self.d_ff, self.dropout_rate,
                              rotary=self.positions == 'rotary',
                              name=f'layer_{layer}')(x, mask=mask, train=train)
    return nn.LayerNorm(name='final_norm')(x)


class Model(transformer.Model):
  """inputs [B, T, D], reset bool [B] | None -> (logits [B, T, output_size], {}).

  The transformer.Model fields plus: memory_size N (slots per head and row; 0 turns
  the memory off, leaving local attention with the same parameters), top_k k ≤ N,
  approximate (lax.approx_max_k instead of exact top-k), recall_target (for
  approximate), normalize_keys (L2-normalised queries and keys in the memory
  blocks), knn_blocks (block indices, negative ones counted from the top as in
  Python; default (−2,): the second-to-last block). Each memory block has its own
  store in 'memory'.
  Per-head statistics are sown to 'intermediates' (see KNNMemoryAttention).
  """

  memory_size: int = 1024
  top_k: int = 32
  approximate: bool = False
  normalize_keys: bool = True
  recall_target: float = 0.95
  knn_blocks: tuple[int, ...] = (-2,)

  ZERO_ALLOWED = ('memory_size',)  # config_checks: 0 is "no memory", not an error

  def setup(self):
    given, n = tuple(self.knn_blocks), self.num_layers
    if not all(isinstance(b, int) and not isinstance(b, bool) and -n <= b < n for b in given):
      raise ValueError(f'model.knn_blocks must hold block indices in [-num_layers, num_layers)'
                       f' = [{-n}, {n}), got {given}')
    blocks = tuple(sorted({b % n for b in given}))
    validate(self.num_heads, self.memory_size, self.top_k, self.approximate,
             self.recall_target, self.d_model)
    self.encoder = KNNEncoder(self.d_model, self.num_heads, self.num_layers, self.d_ff,
                              self.dropout_rate, self.max_len, self.positions,
                              self.memory_size, self.top_k, self.approximate,
                              self.normalize_keys, self.recall_target, blocks)
    self.readout = nn.Dense(self.output_size)

  def __call__(self, inputs: jax.Array, train: bool = False, reset: jax.Array | None = None):
    logits, traces = self.head(self.encoder(inputs, train=train, reset=reset))
    return logits, traces

  def init_decode_state(self, batch_size: int, max_length: int) -> dict:
    raise NotImplementedError('knn_transformer has no incremental decoding (the kNN store '
                              'is written per segment)')

  def decode_step(self, state: dict, x_t: jax.Array):
    raise NotImplementedError('knn_transformer has no incremental decoding (the kNN store '
                              'is written per segment)')
