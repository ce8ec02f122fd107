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

from memflax.models import ntm
from memflax.nn import sparse


class SparseNTMCell(ntm.NTMCell):
  """One sparse NTM step: the NTM cell with top-M addressing, reads and writes.
  read_w/write_w stay dense-shaped [B,H,N] but have exactly top_m nonzeros per head."""

  top_m: int

  def access(self, carry, rp, wp):
    memory = carry['memory']

    def address(p, w_prev):
      return sparse.sparse_address(memory, w_prev, p['keys'], p['beta'], p['gate'],
                                   p['shift'], p['gamma'], self.top_m)

    read_idx, read_v = address(rp, carry['read_w'])
    reads = sparse.sparse_read(memory, read_idx, read_v)
    write_idx, write_v = address(wp, carry['write_w'])
    memory = sparse.sparse_write(memory, write_idx, write_v, wp['erase'], wp['add'])
    # Dense-shaped weightings feed the next step's interpolation and the traces.
    return (memory, reads, sparse.densify(read_idx, read_v, self.memory_size),
            sparse.densify(write_idx, write_v, self.memory_size))


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
