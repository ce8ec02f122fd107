"""Causal (decoder-only) Transformer over the input sequence (Vaswani et al. 2017).

Each step t sees inputs 0..t only, so the model is a drop-in for the recurrent
models on sequence tasks: a linear embedding of the inputs plus positional
encodings, `num_layers` pre-LN encoder blocks under a causal mask, a final
LayerNorm and a linear read-out.

Generation runs one step per token against a key/value cache
(`init_decode_state`, `decode_step`; see memflax.generate), with the same
parameters as the full-sequence `__call__`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn import attention as attn

POSITIONS = ('sinusoidal', 'learned', 'rotary')


class CausalEncoder(nn.Module):
  """inputs [B, T, D_in] -> h [B, T, d_model], each h_t a function of inputs 0..t.

    x_0 = inputs W_e + b_e + PE[:T]
    x_l = EncoderBlock_l(x_{l-1}; causal mask)     l = 1..num_layers
    h   = LayerNorm(x_L)                            (pre-LN stacks need a final norm)

  Incremental decoding: with `cache` from `init_cache(B, L)` the inputs are the
  next T steps of a sequence whose earlier steps are in the cache; positions
  continue from `cache['index']` and the call returns (h [B, T, d_model], the
  advanced cache). Dropout is the caller's `train` flag either way.
  """

  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  d_ff: int = 128
  dropout_rate: float = 0.0
  max_len: int = 512
  positions: str = 'sinusoidal'

  def init_cache(self, batch_size: int, max_length: int) -> dict:
    """{'index': int32 [] (steps seen), 'layers': per layer {'key', 'value'}
    [B, num_heads, max_length, d_model / num_heads]}, all zeros."""
    if max_length > self.max_len:
      raise ValueError(f'decode length {max_length} exceeds model.max_len {self.max_len}')
    block = attn.EncoderBlock(self.num_heads, self.d_ff, parent=None)
    layers = []
    for _ in range(self.num_layers):
      cache = block.init_cache(batch_size, max_length, self.d_model)
      layers.append({'key': cache['key'], 'value': cache['value']})
    return {'index': jnp.zeros((), jnp.int32), 'layers': tuple(layers)}

  def embed_inputs(self, inputs: jax.Array, train: bool, offset, decoding: bool) -> jax.Array:
    """x_0 = inputs W_e + b_e + PE[offset:offset + T] (offset traced when decoding), with
    dropout. Called from a compact `__call__` (here or a subclass's), so the 'embed' and
    'positions' params are created in its scope, under the same names."""
    length = inputs.shape[-2]
    if length > self.max_len:
      raise ValueError(f'sequence length {length} exceeds model.max_len {self.max_len}')
    if self.positions == 'sinusoidal':
      # A decoding step may sit anywhere up to max_len, so it slices the full table.
      table = attn.sinusoidal_encoding(self.max_len if decoding else length, self.d_model)
      pos = jax.lax.dynamic_slice_in_dim(table, offset, length)
    elif self.positions == 'learned':
      pos = attn.LearnedPositionalEmbedding(self.max_len, self.d_model, name='positions')(
          length, offset)
    elif self.positions == 'rotary':
      pos = 0.0  # each attention layer rotates its queries and keys instead
    else:
      raise ValueError(f'model.positions must be one of {POSITIONS}, got {self.positions!r}')
    x = nn.Dense(self.d_model, name='embed')(inputs) + pos
    return nn.Dropout(self.dropout_rate, deterministic=not train)(x)

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False, cache: dict | None = None):
    length = inputs.shape[-2]
    offset = 0 if cache is None else cache['index']
    x = self.embed_inputs(inputs, train, offset, decoding=cache is not None)
    # With a cache, each block builds its own mask over the cached prefix.
    mask = attn.causal_mask(length) if cache is None else None
    layers = []
    for layer in range(self.num_layers):
      block = attn.EncoderBlock(self.num_heads, self.d_ff, self.dropout_rate,
                                rotary=self.positions == 'rotary', name=f'layer_{layer}')
      if cache is None:
        x = block(x, mask=mask, train=train)
      else:
        x, new = block(x, train=train, cache=dict(cache['layers'][layer], index=offset))
        layers.append({'key': new['key'], 'value': new['value']})
    h = nn.LayerNorm(name='final_norm')(x)
    if cache is None:
      return h
    return h, {'index': offset + length, 'layers': tuple(layers)}


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {}).

  positions: 'sinusoidal' (fixed, any length up to max_len), 'learned' (a
  trained [max_len, d_model] table; positions beyond training lengths stay at
  their initial values, so it extrapolates worse) or 'rotary' (nothing added to
  the embedding; every attention layer rotates queries and keys by position, as
  in RoFormer and LLaMA-style "Transformer++" baselines).

  Submodules are built once in `setup`, so `__call__` and `decode_step` use the
  same ones under the same names ('encoder', 'readout'): one parameter tree.
  """

  output_size: int
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  d_ff: int = 128
  dropout_rate: float = 0.0
  max_len: int = 512
  positions: str = 'sinusoidal'

  def setup(self):
    self.encoder = CausalEncoder(self.d_model, self.num_heads, self.num_layers, self.d_ff,
                                 self.dropout_rate, self.max_len, self.positions)
    self.readout = nn.Dense(self.output_size)

  def head(self, h: jax.Array):
    """Encoder states h [..., d_model] -> (logits [..., output_size], traces)."""
    return self.readout(h), {}

  def __call__(self, inputs: jax.Array, train: bool = False):
    return self.head(self.encoder(inputs, train=train))

  def init_decode_state(self, batch_size: int, max_length: int) -> dict:
    """The empty key/value cache for `max_length` (≤ max_len) steps; see CausalEncoder."""
    return self.encoder.init_cache(batch_size, max_length)

  def decode_step(self, state: dict, x_t: jax.Array):
    """One step: (state, x_t [B, D]) -> (state, logits_t [B, output_size]); no dropout.

    Step t's logits equal `__call__(inputs)[0][:, t]` for the inputs fed so far.
    """
    h, state = self.encoder(x_t[:, None, :], train=False, cache=state)
    logits, _ = self.head(h[:, 0])
    return state, logits
