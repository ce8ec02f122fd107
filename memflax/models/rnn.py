"""Vanilla (Elman) recurrent network: a stack of `h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)`
layers and a linear read-out."""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.nn.recurrent import RecurrentStack


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {})."""

  output_size: int
  hidden_size: int = 256
  num_layers: int = 1

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    h = RecurrentStack('rnn', self.hidden_size, self.num_layers, name='rnn')(inputs)
    return nn.Dense(self.output_size, name='readout')(h), {}
