"""Causal (decoder-only) Transformer over the input sequence (Vaswani et al. 2017).

Each step t sees inputs 0..t only, so the model is a drop-in for the recurrent
models on sequence tasks: a linear embedding of the inputs plus positional
encodings, `num_layers` pre-LN encoder blocks under a causal mask, a final
LayerNorm and a linear read-out.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.nn import attention as attn

POSITIONS = ('sinusoidal', 'learned')


class CausalEncoder(nn.Module):
  """inputs [B, T, D_in] -> h [B, T, d_model], each h_t a function of inputs 0..t.

    x_0 = inputs W_e + b_e + PE[:T]
    x_l = EncoderBlock_l(x_{l-1}; causal mask)     l = 1..num_layers
    h   = LayerNorm(x_L)                            (pre-LN stacks need a final norm)
  """

  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  d_ff: int = 128
  dropout_rate: float = 0.0
  max_len: int = 512
  positions: str = 'sinusoidal'

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    length = inputs.shape[-2]
    if length > self.max_len:
      raise ValueError(f'sequence length {length} exceeds model.max_len {self.max_len}')
    if self.positions == 'sinusoidal':
      pos = attn.sinusoidal_encoding(length, self.d_model)
    elif self.positions == 'learned':
      pos = attn.LearnedPositionalEmbedding(self.max_len, self.d_model, name='positions')(length)
    else:
      raise ValueError(f'model.positions must be one of {POSITIONS}, got {self.positions!r}')
    x = nn.Dense(self.d_model, name='embed')(inputs) + pos
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    mask = attn.causal_mask(length)
    for layer in range(self.num_layers):
      x = attn.EncoderBlock(self.num_heads, self.d_ff, self.dropout_rate,
                            name=f'layer_{layer}')(x, mask=mask, train=train)
    return nn.LayerNorm(name='final_norm')(x)


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {}).

  positions: 'sinusoidal' (fixed, any length up to max_len) or 'learned' (a
  trained [max_len, d_model] table; positions beyond training lengths stay at
  their initial values, so it extrapolates worse).
  """

  output_size: int
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  d_ff: int = 128
  dropout_rate: float = 0.0
  max_len: int = 512
  positions: str = 'sinusoidal'

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    h = CausalEncoder(self.d_model, self.num_heads, self.num_layers, self.d_ff,
                      self.dropout_rate, self.max_len, self.positions,
                      name='encoder')(inputs, train=train)
    return nn.Dense(self.output_size, name='readout')(h), {}
