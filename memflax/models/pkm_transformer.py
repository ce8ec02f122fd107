"""Causal Transformer whose feed-forward sublayer is a product-key memory in chosen
blocks (Lample et al. 2019, "Large Memory Layers with Product Keys").

The pre-LN stack of memflax.models.transformer, except that in each block l listed
in `pkm_blocks` the FFN is replaced by the memory (memflax/nn/product_key.py):

  x ← x + Dropout(MultiHead(LN(x); causal mask))
  x ← x + Dropout(PKM(LN(x)))        l ∈ pkm_blocks  (FFN(LN(x)) otherwise)

The memory reads each position on its own, so the stack stays causal, and its
slots are parameters: decoding needs only the attention key/value cache.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.models import transformer
from memflax.nn import attention as attn
from memflax.nn.product_key import QUERY_NORMS, ProductKeyMemory, num_sub_keys


class PKMBlock(nn.Module):
  """Pre-LN block with the memory as its second sublayer. x [B, T, D] -> (y [B, T, D],
  cache or None, {'indices', 'weights'} [B, T, pkm_heads, pkm_topk]); mask and cache
  as attn.EncoderBlock takes them."""

  num_heads: int
  memory_slots: int
  pkm_heads: int
  pkm_topk: int
  pkm_key_dim: int
  pkm_query_norm: str
  dropout_rate: float = 0.0
  rotary: bool = False

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False, cache: dict | None = None):
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    h = nn.LayerNorm(name='attention_norm')(x)
    h = attn.MultiHeadAttention(self.num_heads, rotary=self.rotary, name='attention')(
        h, mask=mask, cache=cache)
    if cache is not None:
      h, cache = h
    x = x + dropout(h)
    memory = ProductKeyMemory(self.memory_slots, self.pkm_key_dim, self.pkm_heads,
                              self.pkm_topk, query_norm=self.pkm_query_norm, name='pkm')
    h, selection = memory(nn.LayerNorm(name='pkm_norm')(x), return_selection=True)
    return x + dropout(h), cache, selection


class PKMEncoder(transformer.CausalEncoder):
  """transformer.CausalEncoder with PKMBlocks at `pkm_blocks`.

  Without a cache: inputs [B, T, D_in] -> (h [B, T, d_model], traces) with traces
  {'pkm{l}_indices', 'pkm{l}_weights'} [B, T, pkm_heads, pkm_topk] per PKM block l.
  With a cache (from `init_cache`): -> (h, the advanced cache), as CausalEncoder.
  The embedding and positions are CausalEncoder's (`embed_inputs`, same parameter names);
  only the block loop differs.
  """

  memory_slots: int = 4096
  pkm_heads: int = 4
  pkm_topk: int = 8
  pkm_key_dim: int = 64
  pkm_blocks: tuple[int, ...] = (1,)
  pkm_query_norm: str = 'layer'

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False, cache: dict | None = None):
    length = inputs.shape[-2]
    offset = 0 if cache is None else cache['index']
    x = self.embed_inputs(inputs, train, offset, decoding=cache is not None)
    mask = attn.causal_mask(length) if cache is None else None
    layers, traces = [], {}
    for layer in range(self.num_layers):
      kwargs = dict(mask=mask, train=train) if cache is None else dict(
          train=train, cache=dict(cache['layers'][layer], index=offset))
      if layer in self.pkm_blocks:
        x, new, selection = PKMBlock(
            self.num_heads, self.memory_slots, self.pkm_heads, self.pkm_topk,
            self.pkm_key_dim, self.pkm_query_norm, self.dropout_rate,
            rotary=self.positions == 'rotary', name=f'layer_{layer}')(x, **kwargs)
        traces.update({f'pkm{layer}_{k}': v for k, v in selection.items()})
      else:
        out = attn.EncoderBlock(self.num_heads, self.d_ff, self.dropout_rate,
                                rotary=self.positions == 'rotary',
                                name=f'layer_{layer}')(x, **kwargs)
        x, new = (out, None) if cache is None else out
      if cache is not None:
        layers.append({'key': new['key'], 'value': new['value']})
    h = nn.LayerNorm(name='final_norm')(x)
    if cache is None:
      return h, traces
    return h, {'index': offset + length, 'layers': tuple(layers)}


class Model(transformer.Model):
  """inputs [B, T, D] -> (logits [B, T, output_size], traces of PKMEncoder).

  The transformer.Model fields, `init_decode_state` and `decode_step`, plus:
  memory_slots N (a perfect square), pkm_heads, pkm_topk (k ≤ √N), pkm_key_dim
  (even), pkm_blocks (which blocks, 0-based, get the memory instead of the FFN) and
  pkm_query_norm ('layer' or 'none'). All PKM blocks have their own memory.
  """

  memory_slots: int = 4096
  pkm_heads: int = 4
  pkm_topk: int = 8
  pkm_key_dim: int = 64
  pkm_blocks: tuple[int, ...] = (1,)
  pkm_query_norm: str = 'layer'

  def setup(self):
    n = num_sub_keys(self.memory_slots, 'model.memory_slots')
    if not 0 < self.pkm_topk <= n:
      raise ValueError(f'model.pkm_topk must be in [1, √memory_slots = {n}], got {self.pkm_topk}')
    if self.pkm_key_dim % 2:
      raise ValueError(f'model.pkm_key_dim must be even, got {self.pkm_key_dim}')
    if self.pkm_query_norm not in QUERY_NORMS:
      raise ValueError(f'model.pkm_query_norm must be one of {QUERY_NORMS}, '
                       f'got {self.pkm_query_norm!r}')
    blocks = tuple(self.pkm_blocks)
    if not all(isinstance(b, int) and 0 <= b < self.num_layers for b in blocks):
      raise ValueError(f'model.pkm_blocks must hold block indices in [0, num_layers = '
                       f'{self.num_layers}), got {blocks}')
    self.encoder = PKMEncoder(self.d_model, self.num_heads, self.num_layers, self.d_ff,
                              self.dropout_rate, self.max_len, self.positions,
                              self.memory_slots, self.pkm_heads, self.pkm_topk,
                              self.pkm_key_dim, blocks, self.pkm_query_norm)
    self.readout = nn.Dense(self.output_size)

  def __call__(self, inputs: jax.Array, train: bool = False):
    h, traces = self.encoder(inputs, train=train)
    logits, _ = self.head(h)
    return logits, traces
