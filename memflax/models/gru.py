"""Gated recurrent units (Cho et al. 2014): a stack of GRU layers (memflax.nn.recurrent.GRUCell)
and a linear read-out."""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.nn.recurrent import RecurrentStack


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {}). reset_after: the GRU of torch and
  flax.linen (reset gate after the recurrent matmul, update gate in the opposite sense)
  instead of Cho et al.'s; see memflax.nn.recurrent.GRUCell."""

  output_size: int
  hidden_size: int = 256
  num_layers: int = 2
  reset_after: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    h = RecurrentStack('gru', self.hidden_size, self.num_layers,
                       gru_reset_after=self.reset_after, name='gru')(inputs)
    return nn.Dense(self.output_size, name='readout')(h), {}
