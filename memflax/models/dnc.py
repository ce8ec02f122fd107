"""Differentiable Neural Computer (Graves et al. 2016): an LSTM controller with a
memory that allocates free slots and remembers the order of writes.

Each step (Graves et al. 2016, Methods) the controller sees [x_t; r_{t−1}] and emits
the interface vector ξ_t (memflax.nn.dnc.DNCInterface). The memory then
  1. frees slots read last step and updates usage u_t, giving allocation a_t;
  2. writes M_t = M_{t−1} ∘ (E − w^w eᵀ) + w^w vᵀ with w^w from a_t and a content
     lookup in M_{t−1};
  3. updates the temporal link matrix L_t and precedence p_t;
  4. reads M_t with w^r mixing backward/content/forward weightings.
The output is y_t = W_y h_t + W_r [r^1_t; …; r^R_t], one Dense on [h_t; r_t].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from memflax.nn import dnc
from memflax.nn import memory as mem
from memflax.nn.recurrent import LSTMCell


class DNCCell(nn.Module):
  """One DNC step. carry = dict(controller, memory [B,W,N], reads [B,R,W],
  read_w [B,R,N], write_w [B,N], usage [B,N], link [B,N,N], precedence [B,N]);
  x [B,D] -> (carry, (out [B,C+R·W], traces)).

  The memory is carried transposed, slots last, as in the NTM (memflax.nn.memory's
  `slots_last`: the CPU kernels of the content lookups, read and write then run
  along the 128 slots instead of the 20-wide words).
  """

  controller_size: int
  memory_size: int
  memory_width: int
  num_read_heads: int
  controller_clip: float

  @nn.compact
  def __call__(self, carry, x):
    batch = x.shape[0]
    controller_in = jnp.concatenate([x, carry['reads'].reshape(batch, -1)], axis=-1)
    controller, h = LSTMCell(self.controller_size, name='controller')(carry['controller'],
                                                                      controller_in)
    xi = dnc.DNCInterface(self.num_read_heads, self.memory_width, clip=self.controller_clip,
                          name='interface')(h)
    memory = carry['memory']
    # Carries that N×N kernels broadcast (see dnc.materialised).
    prev_read_w, prev_write_w, prev_usage, prev_precedence = (
        dnc.materialised(carry[k]) for k in ('read_w', 'write_w', 'usage', 'precedence'))

    psi = dnc.retention(xi['free_gates'], prev_read_w)
    usage = dnc.usage(prev_usage, prev_write_w, psi)
    write_content = mem.content_weighting(memory, xi['write_key'], xi['write_strength'],
                                          slots_last=True)[:, 0]
    alloc = checkpoint_name(dnc.allocation(usage), 'dnc_allocation')
    write_w = dnc.write_weighting(alloc, write_content, xi['alloc_gate'], xi['write_gate'])
    memory = mem.write(memory, write_w[:, None], xi['erase'], xi['write_vector'], slots_last=True)

    link, forward_w, backward_w = dnc.link_and_directions(carry['link'], prev_precedence,
                                                          write_w, prev_read_w)
    forward_w = checkpoint_name(forward_w, 'dnc_forward')
    backward_w = checkpoint_name(backward_w, 'dnc_backward')
    precedence = dnc.precedence(prev_precedence, write_w)

    read_w = dnc.read_weighting(
        backward_w,
        mem.content_weighting(memory, xi['read_keys'], xi['read_strengths'], slots_last=True),
        forward_w,
        xi['read_modes'])
    reads = mem.read(memory, read_w, slots_last=True)

    # For plots only (see ntm.NTMCell), in the textbook layout [B,N,W].
    self.sow('intermediates', 'memory', memory.swapaxes(1, 2))
    new_carry = dict(controller=controller, memory=memory, reads=reads, read_w=read_w,
                     write_w=write_w, usage=usage, link=link, precedence=precedence)
    out = jnp.concatenate([h, reads.reshape(batch, -1)], axis=-1)
    return new_carry, (out, {'read_weights': read_w, 'write_weights': write_w[:, None]})


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size],
  {'read_weights': [B,T,R,N], 'write_weights': [B,T,1,N]}).

  Memory, usage, links, precedence and all weightings start at zero, as in the
  paper; with an empty memory the first write goes by allocation to slot 0.
  """

  output_size: int
  controller_size: int = 100
  memory_size: int = 32
  memory_width: int = 20
  num_read_heads: int = 1
  controller_clip: float = 20.0

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    del train  # no dropout in this model
    batch, n, w, r = inputs.shape[0], self.memory_size, self.memory_width, self.num_read_heads
    zeros = lambda *shape: jnp.zeros((batch, *shape), jnp.float32)
    carry = dict(
        controller=LSTMCell(self.controller_size, parent=None).initial_carry((batch,)),
        memory=zeros(w, n),  # slots last (DNCCell)
        reads=zeros(r, w),
        read_w=zeros(r, n),
        write_w=zeros(n),
        usage=zeros(n),
        link=zeros(n, n),
        precedence=zeros(n),
    )
    # Rematerialised like the NTM's scan: recomputing a step's N×N link update and N×W
    # memory in the backward pass is cheaper than stacking them for every time step
    # (batch 32 on CPU: ~1.4× faster per step). Kept per step instead: the [B,N] results of
    # N×N work (allocation, forward and backward weightings), so the recomputation skips
    # the allocation's comparisons and two matrix-vector products (41-step batch-32 step,
    # one core: 191 → 185 ms; keeping the controller output, interface and content
    # weightings as well made it 275 ms).
    scan = nn.scan(nn.remat(DNCCell, policy=jax.checkpoint_policies.save_only_these_names(
        'dnc_allocation', 'dnc_forward', 'dnc_backward')), variable_broadcast='params',
                   variable_axes={'intermediates': 1}, split_rngs={'params': False},
                   in_axes=1, out_axes=1)
    _, (features, traces) = scan(
        controller_size=self.controller_size, memory_size=n, memory_width=w,
        num_read_heads=r, controller_clip=self.controller_clip, name='cell')(carry, inputs)
    return nn.Dense(self.output_size, name='readout')(features), traces
