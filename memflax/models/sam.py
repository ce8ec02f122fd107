"""Sparse Access Memory (Rae et al. 2016): an LSTM controller with a memory it reads and
writes K rows at a time (memflax.nn.sam).

Each step the controller sees the input and the previous reads; it writes
w^W = α(γ w^R_{t−1} + (1 − γ) I^U) aᵀ (the slots it read last step, or the least
recently used slot, which is erased first), then each read head reads the K rows most
cosine-similar to its query, softmax-weighted. The output is a linear map of [h_t, r_t].

Per step the model costs O(N·W) for the similarity scan and the least-used argmin
(both without gradient) and O(K·W) for everything differentiable; with
backprop='sparse' (default) training memory is one N×W buffer plus O(T·K·W), against
O(T·N·W) for a dense NTM (benchmarks/sparse_scaling.py); 'revert' keeps fewer bytes per
step (only the overwritten rows) but two N×W buffers; 'autodiff' differentiates the same
forward plainly (the reference the tests compare gradients with). memflax.nn.sam.run
says how each works.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn import sam

BACKPROPS = ('sparse', 'revert', 'autodiff')
CPU_SCAN_BLOCK, CPU_SCAN_FROM = 1024, 16384  # see Model.scan_block


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size], traces), traces with
  'read_slots'/'read_slot_weights' [B,T,H,K] and 'write_slots'/'write_slot_weights'
  [B,T,H·K+1] (the slot indices each head touched and its weights on them).

  memory_size N, memory_width W, num_read_heads H, top_k K: rows per read head,
  scan_block: rows of the similarity scan at a time (see below).
  """

  output_size: int
  controller_size: int = 100
  memory_size: int = 128
  memory_width: int = 20
  num_read_heads: int = 1
  top_k: int = 4
  controller_clip: float = 20.0
  controller_forget_bias: float = 1.0
  backprop: str = 'sparse'
  # Rows the similarity scan scores at a time (memflax.nn.sam.select_reads): 0 all at
  # once, > 0 in blocks so no [B,N] temporary exists, −1 picks: on a CPU blocks of
  # CPU_SCAN_BLOCK once N > CPU_SCAN_FROM (below that the one-pass temporaries are
  # smaller than a block's copy of the memory, and faster); all at once on an
  # accelerator (where each block would be a kernel launch per time step).
  scan_block: int = -1

  def sizes(self) -> sam.Sizes:
    block = self.scan_block
    if block < 0:
      blocks = jax.default_backend() == 'cpu' and self.memory_size > CPU_SCAN_FROM
      block = CPU_SCAN_BLOCK if blocks else 0
    return sam.Sizes(self.memory_size, self.memory_width, self.num_read_heads, self.top_k,
                     self.controller_size, self.controller_clip, block)

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    if self.top_k < 1:
      raise ValueError(f'model.top_k must be >= 1, got {self.top_k}')
    if self.backprop not in BACKPROPS:
      raise ValueError(f'model.backprop must be one of {BACKPROPS}, got {self.backprop!r}')
    batch, _, input_size = inputs.shape
    sizes = self.sizes()
    # One param tree, so the time loop is a pure function of it (its VJP is custom).
    params = self.param('core', lambda key: sam.init_params(
        key, sizes, input_size, self.output_size, self.controller_forget_bias))
    ys, rec = sam.run(params, jnp.swapaxes(inputs, 0, 1), *sam.initial_state(sizes, batch),
                      sizes, self.backprop)
    traces = dict(read_slots=rec['ridx'], read_slot_weights=rec['read_w'],
                  write_slots=rec['widx'], write_slot_weights=rec['write_w'])
    return jnp.swapaxes(ys, 0, 1), jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), traces)
