"""Plain recurrent baseline: a stack of LSTM layers and a linear read-out.

The NTM paper's comparison model for the copy task (Graves et al. 2014, §4).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.nn.recurrent import RecurrentStack


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {})."""

  output_size: int
  hidden_size: int = 256
  num_layers: int = 3

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    h = RecurrentStack('lstm', self.hidden_size, self.num_layers, name='rnn')(inputs)
    return nn.Dense(self.output_size, name='readout')(h), {}
