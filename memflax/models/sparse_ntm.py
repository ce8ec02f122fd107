"""Sparse NTM: the NTM of memflax.models.ntm with heads that each touch only top_m slots.

Same controller, head parameters and output map as the NTM (parameter names and
count match, so an NTM checkpoint loads as-is); only addressing, read and write
differ (memflax.nn.sparse, after Rae et al. 2016's sparse access memory):

  w^c_t = top-M softmax_j(β cos(k, M_j))                content, exactly M slots
  w_t   = top-M renorm(sharpen(shift(g w^c_t + (1 − g) w_{t-1}), γ))
  r_t   = Σ_{j∈S} w_tj M_{t-1,j}                        reads gather M rows
  M_t   = erase/add on the M rows of each write head    other rows untouched

Why keep interpolation, shift and sharpen: copying needs location addressing
(step one slot on from the last write), and content alone cannot provide it
while the memory is still featureless. Those three steps reuse the dense NTM
operations on [B,H,N] vectors, which costs O(N) per head like the content
similarity itself, and the final top-M keeps exactly M nonzeros so reads, writes
and their gradients stay sparse. With top_m ≥ memory_size the model computes the
same function as the NTM.

Frobenius normalisation, when enabled, rescales the whole memory each step, so
with it unselected rows do change (by a common factor).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.models import ntm
from memflax.nn import memory as mem
from memflax.nn import sparse
from memflax.nn.recurrent import LSTMCell


class SparseNTMCell(nn.Module):
  """One sparse NTM step. carry = dict(controller, memory [B,N,W], reads [B,R,W],
  read_w [B,R,N], write_w [B,Wr,N]) with read_w/write_w dense-shaped but exactly
  top_m nonzeros per head; x [B,D] -> (carry, (out [B,C+R·W], traces))."""

  controller_size: int
  memory_size: int
  memory_width: int
  num_read_heads: int
  num_write_heads: int
  shift_range: int
  frobenius_norm: bool
  controller_clip: float
  top_m: int

  @nn.compact
  def __call__(self, carry, x):
    batch = x.shape[0]
    controller_in = jnp.concatenate([x, carry['reads'].reshape(batch, -1)], axis=-1)
    controller, h = LSTMCell(self.controller_size, name='controller')(carry['controller'],
                                                                      controller_in)
    heads = dict(width=self.memory_width, shift_range=self.shift_range,
                 clip=self.controller_clip)
    rp = mem.NTMHeads(self.num_read_heads, name='read_heads', **heads)(h)
    wp = mem.NTMHeads(self.num_write_heads, writes=True, name='write_heads', **heads)(h)
    memory = carry['memory']

    def address(p, w_prev):
      return sparse.sparse_address(memory, w_prev, p['keys'], p['beta'], p['gate'],
                                   p['shift'], p['gamma'], self.top_m)

    read_idx, read_v = address(rp, carry['read_w'])
    reads = sparse.sparse_read(memory, read_idx, read_v)
    write_idx, write_v = address(wp, carry['write_w'])
    memory = sparse.sparse_write(memory, write_idx, write_v, wp['erase'], wp['add'])
    if self.frobenius_norm:
      memory = mem.frobenius_normalize(memory)
    # Dense-shaped weightings feed the next step's interpolation and the traces.
    read_w = sparse.densify(read_idx, read_v, self.memory_size)
    write_w = sparse.densify(write_idx, write_v, self.memory_size)
    new_carry = dict(controller=controller, memory=memory, reads=reads, read_w=read_w,
                     write_w=write_w)
    out = jnp.concatenate([h, reads.reshape(batch, -1)], axis=-1)
    return new_carry, (out, {'read_weights': read_w, 'write_weights': write_w})


class Model(ntm.Model):
  """inputs [B, T, D] -> (logits [B, T, output_size],
  {'read_weights': [B,T,R,N], 'write_weights': [B,T,Wr,N]}), each weighting with
  exactly min(top_m, memory_size) nonzeros.

  Fields and memory_init as memflax.models.ntm.Model, plus `top_m`: how many
  slots each head reads or writes per step.
  """

  top_m: int = 8

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    if self.top_m < 1:
      raise ValueError(f'model.top_m must be >= 1, got {self.top_m}')
    # One nonzero focus (slot 0, as the NTM starts) lies within any top-M support.
    return self._scan_cells(inputs, SparseNTMCell, top_m=self.top_m)
