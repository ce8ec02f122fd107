"""Gated recurrent units (Cho et al. 2014): a stack of GRU layers (memflax.nn.recurrent.GRUCell)
and a linear read-out."""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.nn.recurrent import RecurrentStack


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {})."""

  output_size: int
  hidden_size: int = 256
  num_layers: int = 2

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    h = RecurrentStack('gru', self.hidden_size, self.num_layers, name='gru')(inputs)
    return nn.Dense(self.output_size, name='readout')(h), {}
