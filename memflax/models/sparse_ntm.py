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

Why it does not learn copy (measured; for a sparse memory that does, use
memflax.models.sam). Seed 0, the preset (frobenius_norm off, constant M_0) and its
optimizer (Adam 3e-3, cosine over the run, batch 8); bit errors/seq on 1000 copy
sequences of length 1..20, in runs of 5000 steps (1500 or 3000 where the step says):
  top_m = 128 (= memory_size: the dense NTM)   0.0 from step 1000 on
  top_m = 32                                   17.96 at step 5000
  top_m = 8 (the preset)                       27.6 at step 1500 (17.4 after 50K
                                               sequences, as reported)
  top_m = 8, content weighting left dense      23.3 at step 3000
  top_m = 8, memory_init='random', forget
  bias 10, write boost 3 (the generalising NTM) 24.4 at step 3000
So the truncation itself, not the preset, stops learning. Traces of the trained top-8
model (evaluate.trace_one) show why: the write head stays on slot 0 (weight 1.0) for
the whole input, and the read head jumps in blocks of ~5 slots through unwritten rows.
  1. Ties decide the support. The constant M_0 gives every unwritten row the same
     cosine, so the content top-M is slots 0..M−1 by index; with the gate at 0.5 at
     initialisation, each step puts g/M on those slots, a pull back to the start that
     the dense NTM does not have (its content weighting is a flat 1/N that sharpening
     removes). The final top-M of a blurred weighting is likewise chosen by index.
  2. The truncation cuts the gradient outside the current M slots and renormalises
     what is left, so the loss cannot reward moving mass to a slot the head does not
     already touch, which is how the dense NTM learns to step (shift +1, gate → 0).
     A head that finds "stay on slot 0" early has no gradient out of it.
SAM avoids both: content reads only (the top-K of real, written rows), and writes go
to the least-used slot, so stepping through memory needs no learned shift.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.models import ntm
from memflax.nn import sparse


class SparseNTMCell(ntm.NTMCell):
  """One sparse NTM step: the NTM cell with top-M addressing, reads and writes.
  read_w/write_w stay dense-shaped [B,H,N] but have exactly top_m nonzeros per head."""

  top_m: int
  slots_last = False  # the sparse gathers and scatters index rows of [B,N,W]

  def access(self, carry, params, erase, add):
    memory, r = carry['memory'], self.num_read_heads

    def address(heads, w_prev):
      p = {k: v[:, heads] for k, v in params.items()}
      return sparse.sparse_address(memory, w_prev[:, heads], p['keys'], p['beta'], p['gate'],
                                   p['shift'], p['gamma'], self.top_m)

    read_idx, read_v = address(slice(None, r), carry['weights'])
    reads = sparse.sparse_read(memory, read_idx, read_v)
    write_idx, write_v = address(slice(r, None), carry['weights'])
    memory = sparse.sparse_write(memory, write_idx, write_v, erase, add)
    # Dense-shaped weightings feed the next step's interpolation and the traces.
    weights = jnp.concatenate([sparse.densify(read_idx, read_v, self.memory_size),
                               sparse.densify(write_idx, write_v, self.memory_size)], axis=1)
    return memory, reads, weights


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
    if self.top_m < 1:
      raise ValueError(f'model.top_m must be >= 1, got {self.top_m}')
    # One nonzero focus (slot 0, as the NTM starts) lies within any top-M support.
    return self._scan_cells(inputs, SparseNTMCell, train, top_m=self.top_m)
