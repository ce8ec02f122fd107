"""The stack shared by the `deltanet` and `gated_deltanet` families: a pre-norm residual
stack like the causal Transformer's, with a delta-rule (or linear-attention) mixer in place
of softmax attention.

  x_0 = inputs W_e + b_e                       (no positions: the recurrence orders steps)
  x_l ← x_l + Mixer_l(LN(x_l)),  x_l ← x_l + FFN_l(LN(x_l))        l = 1..num_layers
  logits = LN(x_L) W_r + b_r

Generation runs the mixers one token at a time from `init_decode_state`: per layer a
d × d memory per head and a few convolution inputs, the same size at every position.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn.attention import FeedForward
from memflax.nn.fast_weight_layers import DeltaNetMixer


class DeltaStack(nn.Module):
  """inputs [B, T, D_in] -> (logits [B, T, output_size], {}).

  Fields mirror memflax.nn.fast_weight_layers.DeltaNetMixer (update_rule 'delta' or
  'linear', gated, use_beta, qk_norm, short_conv, output_norm, output_gate, chunk_size,
  mode 'chunk' or 'recurrent'); d_model, num_heads, num_layers and d_ff size the stack as
  they size the Transformer.
  """

  output_size: int
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  d_ff: int = 128
  update_rule: str = 'delta'
  gated: bool = False
  use_beta: bool = True
  qk_norm: bool = True
  short_conv: int = 4
  output_norm: bool = True
  output_gate: bool = False
  chunk_size: int = 64
  mode: str = 'chunk'

  def setup(self):
    self.embed = nn.Dense(self.d_model)
    self.mixer_norms = [nn.LayerNorm() for _ in range(self.num_layers)]
    self.mixers = [self._mixer() for _ in range(self.num_layers)]
    self.ffn_norms = [nn.LayerNorm() for _ in range(self.num_layers)]
    self.ffns = [FeedForward(self.d_ff) for _ in range(self.num_layers)]
    self.final_norm = nn.LayerNorm()
    self.readout = nn.Dense(self.output_size)

  def _mixer(self) -> DeltaNetMixer:
    return DeltaNetMixer(self.num_heads, None, self.update_rule, self.gated, self.use_beta,
                         self.qk_norm, self.short_conv, self.output_norm, self.output_gate,
                         self.chunk_size, self.mode, parent=None)

  def _run(self, inputs: jax.Array, states: tuple | None):
    x = self.embed(inputs)
    new_states = []
    for layer in range(self.num_layers):
      h = self.mixer_norms[layer](x)
      if states is None:
        x = x + self.mixers[layer](h)
      else:
        h, state = self.mixers[layer](h, states[layer])
        x = x + h
        new_states.append(state)
      x = x + self.ffns[layer](self.ffn_norms[layer](x))
    return self.readout(self.final_norm(x)), tuple(new_states)

  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout
    return self._run(inputs, None)[0], {}

  def init_decode_state(self, batch_size: int, max_length: int) -> tuple:
    """Per layer the mixer's empty state; `max_length` is not needed (constant memory)."""
    del max_length
    return tuple(self._mixer().init_state(batch_size, self.d_model)
                 for _ in range(self.num_layers))

  def decode_step(self, state: tuple, x_t: jax.Array):
    """(state, x_t [B, D_in]) -> (state, logits_t [B, output_size]); step t's logits equal
    `__call__(inputs)[0][:, t]` for the inputs fed so far."""
    logits, state = self._run(x_t[:, None, :], state)
    return state, logits[:, 0]
