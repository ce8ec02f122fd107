"""A differentiable neural dictionary read and written within each sequence (Pritzel et al.
2017, "Neural Episodic Control"), for recall tasks (MQAR, associative recall).

NEC stores (embedding of a state h → what followed it) and looks up the embedding of the
current state. Here the "state" is a short causal window of the inputs:

  e_t          = x_t W_e                                      embedding   [E]
  c^k, c^q, c^v = causal depthwise convolutions of e (conv_size taps each,
                 memflax/nn/causal_conv.py); initialised as c^k_t = e_{t−1}, c^q_t = e_t,
                 c^v_t = e_t, i.e. key = the state before, query = the state now,
                 value = what came now; all taps are trained
  h_t = c^k_t W_h,  q_t = c^q_t W_h,  v_t = c^v_t W_v            one W_h for keys and queries
  s_t          = σ(w_s · [c^k_t, c^v_t] + b_s)                 write strength (write_gate)
  r_t          = DND lookup of q_t among the entries (h_s, v_s, s_s) written at s < t
                 (memflax/nn/dnd.py: p nearest, weights ∝ s_i / (‖q − h_i‖² + δ))
  logits_t     = W_2 relu(W_1 [r_t, e_t] + b_1) + b_2

Every step writes; the gate lets the model make an entry weigh nothing (e.g. MQAR's filler
tokens). capacity 0 reads with the causal parallel form (capacity T); capacity C > 0 runs
the recurrent form with C slots and least-recently-used overwriting.

Traces [B, T, ...]: 'dnd_weights' [p] and 'dnd_indices' [p] (entries or slots, nearest
first), 'dnd_nearest_distance' (‖q − h‖² of the nearest valid entry, −1 with none) and
'dnd_write_strength' s_t.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memflax.nn.causal_conv import causal_depthwise_conv
from memflax.nn.dnd import DND


def _stream_init(conv_size: int, embed_size: int):
  """Taps [K, 3E] for the key, query and value streams: a one-step shift for keys, the
  identity for queries and values (the NEC reading above), zeros elsewhere."""
  def init(key, shape, dtype=jnp.float32):
    del key, shape
    taps = np.zeros((conv_size, 3, embed_size), np.float32)
    taps[conv_size - 2, 0] = 1.0   # key: e_{t−1} (tap K−1 weighs the current step)
    taps[conv_size - 1, 1:] = 1.0  # query, value: e_t
    return jnp.asarray(taps.reshape(conv_size, 3 * embed_size), dtype)
  return init


class Model(nn.Module):
  """inputs [B, T, D_in] -> (logits [B, T, output_size], traces); see the module docstring."""

  output_size: int
  embed_size: int = 64
  key_size: int = 32
  value_size: int = 64
  hidden_size: int = 128
  num_neighbours: int = 8     # p
  delta: float = 1e-3         # δ of the inverse-distance kernel
  capacity: int = 0           # 0: parallel form, capacity T; > 0: recurrent form, C slots
  conv_size: int = 2          # taps of the causal mixing (≥ 2: the key needs e_{t−1})
  write_gate: bool = True
  query_block: int = 0        # > 0: parallel-form distances in blocks of this many queries

  def _check(self):
    for name in ('embed_size', 'key_size', 'value_size', 'hidden_size', 'num_neighbours'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'model.{name} must be an integer >= 1, got {value!r}')
    if not isinstance(self.conv_size, int) or self.conv_size < 2:
      raise ValueError(f'model.conv_size must be an integer >= 2 (keys are written from the '
                       f'previous step), got {self.conv_size!r}')
    if not isinstance(self.capacity, int) or isinstance(self.capacity, bool) \
        or self.capacity < 0:
      raise ValueError(f'model.capacity must be an integer >= 0 (0: capacity T, the parallel '
                       f'form), got {self.capacity!r}')
    if 0 < self.capacity < self.num_neighbours:
      raise ValueError(f'model.capacity ({self.capacity}) must be >= model.num_neighbours '
                       f'({self.num_neighbours}) when > 0')
    if not self.delta > 0:
      raise ValueError(f'model.delta must be > 0, got {self.delta!r}')
    if not isinstance(self.query_block, int) or self.query_block < 0:
      raise ValueError(f'model.query_block must be an integer >= 0, got {self.query_block!r}')
    if not isinstance(self.write_gate, bool):
      raise ValueError(f'model.write_gate must be true or false, got {self.write_gate!r}')

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    self._check()
    e = nn.Dense(self.embed_size, name='embed')(inputs)
    taps = self.param('streams', _stream_init(self.conv_size, self.embed_size),
                      (self.conv_size, 3 * self.embed_size))
    mixed, _ = causal_depthwise_conv(jnp.concatenate([e, e, e], axis=-1), taps.astype(e.dtype))
    c_key, c_query, c_value = jnp.split(mixed, 3, axis=-1)
    strength = None
    if self.write_gate:
      gate = nn.Dense(1, name='write_gate')(jnp.concatenate([c_key, c_value], axis=-1))
      strength = jax.nn.sigmoid(gate[..., 0])
    memory = DND(self.key_size, self.value_size, self.num_neighbours, self.delta,
                 self.capacity, self.query_block, name='dnd')
    read, info = memory(c_query, c_key, c_value, strength)
    h = nn.relu(nn.Dense(self.hidden_size, name='hidden')(jnp.concatenate([read, e], -1)))
    logits = nn.Dense(self.output_size, name='readout')(h)
    nearest = jnp.where(info['valid'][..., 0], info['distances'][..., 0], -1.0)
    traces = {'dnd_weights': info['weights'], 'dnd_indices': info['indices'],
              'dnd_nearest_distance': nearest,
              'dnd_write_strength': jnp.ones(inputs.shape[:2], e.dtype) if strength is None
                                    else strength}
    return logits, traces
