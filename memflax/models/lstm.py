"""Plain recurrent baseline: a stack of LSTM layers and a linear read-out.

The NTM paper's comparison model for the copy task (Graves et al. 2014, §4).
Generation carries the LSTM state from step to step (`init_decode_state`,
`decode_step`; see memflax.generate), with the same parameters as `__call__`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from memflax.nn.recurrent import RecurrentStack


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], {}).

  Submodules are built once in `setup`, so `__call__` and `decode_step` use the
  same ones under the same names ('rnn', 'readout'): one parameter tree.
  """

  output_size: int
  hidden_size: int = 256
  num_layers: int = 3

  def setup(self):
    self.rnn = RecurrentStack('lstm', self.hidden_size, self.num_layers)
    self.readout = nn.Dense(self.output_size)

  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    return self.readout(self.rnn(inputs)), {}

  def init_decode_state(self, batch_size: int, max_length: int) -> tuple:
    """Zero carries: per layer (c, h), each [B, hidden_size] (RecurrentStack's order)."""
    del max_length  # a recurrent state does not grow with the sequence
    return self.rnn.initial_carry((batch_size,))

  def decode_step(self, state: tuple, x_t: jax.Array):
    """One step: (state, x_t [B, D]) -> (state, logits_t [B, output_size])."""
    # A length-1 scan through the same stack: the same params as `__call__`.
    state, h = self.rnn(x_t[:, None, :], initial_carry=state, return_carry=True)
    return state, self.readout(h[:, 0])
