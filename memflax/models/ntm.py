"""Neural Turing Machine (Graves et al. 2014): an LSTM controller with an external memory.

Each step the controller sees the input and the previous reads; its state sets
the parameters of the read and write heads (memflax.nn.memory.NTMHeads). Read
heads read M_{t-1}; write heads then erase/add to give M_t, optionally followed
by Frobenius normalisation; the output is a linear map of [h_t, reads_t].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn import memory as mem
from memflax.nn import weight_taps
from memflax.nn.recurrent import LSTMCell

MEMORY_INITS = ('constant', 'learned', 'random')


class NTMCell(nn.Module):
  """One NTM step. carry = dict(controller, memory [B,W,N], reads [B,R,W],
  weights [B,R+Wr,N] (read heads first)); x [B,D] or (x, taps) -> (carry,
  (out [B,C+R·W], traces)).

  The carry holds the memory transposed, slots last (memflax.nn.memory: the CPU
  kernels vectorise over N); what it sows for plots is [B,N,W] as everywhere else.
  """

  slots_last = True  # memory layout of the carry; a class constant, not a field

  controller_size: int
  memory_size: int
  memory_width: int
  num_read_heads: int
  num_write_heads: int
  shift_range: int
  frobenius_norm: bool
  controller_clip: float
  controller_forget_bias: float
  write_sharpen_boost: float

  @nn.compact
  def __call__(self, carry, x):
    # Inside Model's scan x comes with this step's weight taps ({layer: (x_tap, y_tap)},
    # memflax.nn.weight_taps; None when not training).
    x, taps = x if isinstance(x, tuple) else (x, None)
    taps = taps or {}
    batch = x.shape[0]
    controller_in = jnp.concatenate([x, carry['reads'].reshape(batch, -1)], axis=-1)
    controller, h = LSTMCell(self.controller_size, forget_bias=self.controller_forget_bias,
                             name='controller')(carry['controller'], controller_in,
                                                taps.get('controller'))
    heads = dict(width=self.memory_width, shift_range=self.shift_range,
                 clip=self.controller_clip, activate=False)
    raw_read = mem.NTMHeads(self.num_read_heads, name='read_heads', **heads)(
        h, taps.get('read_heads'))
    raw_write = mem.NTMHeads(self.num_write_heads, writes=True, name='write_heads', **heads)(
        h, taps.get('write_heads'))
    # Read and write heads go through the activations and addressing as one set of
    # R + Wr heads, read heads first: at batch 1 the step's cost is its count of small
    # kernels, and each pass over both sets costs the kernels of one.
    addressing = raw_read.shape[-1]
    params = mem.head_parameters(
        jnp.concatenate([raw_read, raw_write[..., :addressing]], axis=1),
        self.memory_width, self.shift_range)
    if self.write_sharpen_boost:
      # γ' = γ + κ · confidence(shift): the write head sharpens as its moves become certain.
      is_write = jnp.arange(self.num_read_heads + self.num_write_heads) >= self.num_read_heads
      params['gamma'] = params['gamma'] + self.write_sharpen_boost * is_write * (
          mem.shift_confidence(params['shift']))
    erase = jax.nn.sigmoid(raw_write[..., addressing:addressing + self.memory_width])
    add = jnp.tanh(raw_write[..., addressing + self.memory_width:])
    memory, reads, weights = self.access(carry, params, erase, add)
    if self.frobenius_norm:
      memory = mem.frobenius_normalize(memory)
    # Memory contents for plots: kept only when apply() is asked for mutable
    # 'intermediates' (evaluate.trace_one), so training never stacks [B,T,N,W].
    self.sow('intermediates', 'memory', memory.swapaxes(1, 2) if self.slots_last else memory)
    new_carry = dict(controller=controller, memory=memory, reads=reads, weights=weights)
    out = jnp.concatenate([h, reads.reshape(batch, -1)], axis=-1)
    read_w, write_w = jnp.split(weights, [self.num_read_heads], axis=1)
    return new_carry, (out, {'read_weights': read_w, 'write_weights': write_w})

  def access(self, carry, params, erase, add):
    """Dense read of M_{t-1}, then erase/add write.

    params: `head_parameters` of all R + Wr heads, read heads first; erase/add [B,Wr,W]
    -> (memory in the carry's layout, reads [B,R,W], weights [B,R+Wr,N]).
    """
    memory, layout = carry['memory'], self.slots_last
    weights = mem.address(memory, carry['weights'], params['keys'], params['beta'],
                          params['gate'], params['shift'], params['gamma'], layout)
    read_w, write_w = jnp.split(weights, [self.num_read_heads], axis=1)
    reads = mem.read(memory, read_w, layout)
    return mem.write(memory, write_w, erase, add, layout), reads, weights


def save_smaller_than(limit: int):
  """A remat policy (jax.checkpoint_policies): keep for the backward pass every value
  of fewer than `limit` elements, recompute the larger ones.

  With `limit` the size of the memory, a step keeps its head weightings, scores and
  controller vectors (a few hundred numbers per row each) and recomputes only the
  memory-sized [B,W,N] products of the write and the normalisation from the carried
  memory. Recomputing everything cost the backward pass a second forward pass of small
  kernels (at batch 1 a step's time is their count); keeping everything stacked half a
  dozen memories per time step (at batch 32 twice the step time).
  """
  def policy(prim, *avals, **params) -> bool:
    try:
      out = prim.abstract_eval(*avals, **params)
    except Exception:  # noqa: BLE001 - a primitive without shape rules: recompute it
      return False
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], (set, frozenset)):
      out = out[0]  # (avals, effects)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return all(getattr(o, 'size', limit) < limit for o in outs)
  return policy


class Model(nn.Module):
  """inputs [B, T, D] -> (logits [B, T, output_size],
  {'read_weights': [B,T,R,N], 'write_weights': [B,T,Wr,N]}).

  memory_init: 'constant' fills M_0 with 1e-6 (Collier & Beel 2018: fastest to
  converge), 'learned' trains M_0, 'random' fixes M_0 to small uniform noise as
  pytorch-ntm does. All heads start focused on slot 0, which gives location
  addressing a reference point while the constant memory is still featureless.

  Length generalisation (copy trained on lengths 1..20, tested at 40-120). Defaults
  keep the original model; tests/test_ntm_generalisation.py checks the mechanisms.
    write_sharpen_boost κ: the write head's γ becomes γ + κ·shift_confidence
      (memflax.nn.memory.shift_confidence): soft while its shift is unsure (early
      training), sharp once it steps crisply. A head with γ ≈ 1.2 that mixes g ≈ 0.45
      of a flat content weighting into its focus each step (the default run's write
      head) loses its focus geometrically: max weight ~0.1 at step 20, uniform by ~30.
    controller_forget_bias: initial forget-gate bias of the LSTM controller. At 1 its
      cells leak (f ≈ 0.94): units that count during the input decay during the output
      and change the heads' behaviour a fixed ~35 output steps in, whatever the
      length. At 10 the counters stay linear, so their crossings scale with the length.
  Measured with frobenius_norm=False and memory_init='random'. With Frobenius
  normalisation every sharp write of a large add shrinks all older rows, and training
  answers by keeping the write head blurred (or, forced sharp, fails to learn copy);
  with it off and M_0 at 1e-6 ('constant') training was unstable on 2 of 3 seeds.
  """

  output_size: int
  controller_size: int = 100
  memory_size: int = 128
  memory_width: int = 20
  num_read_heads: int = 1
  num_write_heads: int = 1
  shift_range: int = 1
  frobenius_norm: bool = True
  memory_init: str = 'constant'
  controller_clip: float = 20.0
  controller_forget_bias: float = 1.0
  write_sharpen_boost: float = 0.0

  def _initial_memory(self) -> jax.Array:
    shape = (self.memory_size, self.memory_width)
    if self.memory_init == 'constant':
      return jnp.full(shape, 1e-6, jnp.float32)
    if self.memory_init == 'learned':
      return self.param('memory_init', nn.initializers.constant(1e-6), shape)
    if self.memory_init == 'random':
      bound = 1.0 / (self.memory_size + self.memory_width) ** 0.5
      init = self.param('memory_init', nn.initializers.uniform(2 * bound), shape)
      return jax.lax.stop_gradient(init - bound)
    raise ValueError(f'model.memory_init must be one of {MEMORY_INITS}, got {self.memory_init!r}')

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    return self._scan_cells(inputs, NTMCell, train)

  def _weight_taps(self, batch: int, steps: int) -> dict | None:
    """memflax.nn.weight_taps for the cell's three kernels (controller gates, read and
    write head projections), [B,T,...] like the inputs; None while initialising."""
    if self.is_initializing():
      return None
    cell = self.variables['params']['cell']
    taps = {}
    for name, path in (('controller', ('controller', 'gates')),
                       ('read_heads', ('read_heads', 'proj')),
                       ('write_heads', ('write_heads', 'proj'))):
      kernel = cell[path[0]][path[1]]['kernel']
      taps[name] = weight_taps.weight_taps(kernel, (batch, steps, kernel.shape[0]),
                                           (batch, steps, kernel.shape[1]))
    return taps

  def _scan_cells(self, inputs: jax.Array, cell_cls, train: bool = False, **cell_fields):
    """Runs `cell_cls` (NTMCell or a variant taking extra `cell_fields`) over time
    from the initial memory and head focus; returns (logits, traces). When training,
    the cell's kernels get their gradients through weight taps (memflax.nn.weight_taps):
    one matmul each after the backward loop instead of an outer product per step."""
    batch = inputs.shape[0]
    if self.write_sharpen_boost < 0:
      raise ValueError(f'model.write_sharpen_boost must be >= 0, got {self.write_sharpen_boost}')
    initial = self._initial_memory()
    if cell_cls.slots_last:
      initial = initial.T
    memory0 = jnp.broadcast_to(initial, (batch, *initial.shape))
    if self.frobenius_norm:
      memory0 = mem.frobenius_normalize(memory0)
    focus = jax.nn.one_hot(0, self.memory_size)

    def heads(n):
      return jnp.broadcast_to(focus, (batch, n, self.memory_size))

    carry = dict(
        controller=LSTMCell(self.controller_size, parent=None).initial_carry((batch,)),
        memory=memory0,
        reads=mem.read(memory0, heads(self.num_read_heads), cell_cls.slots_last),
        weights=heads(self.num_read_heads + self.num_write_heads),
    )
    # Rematerialised with a policy: the backward pass recomputes each step's [B,W,N]
    # intermediates from the carried memory and keeps everything smaller (see
    # save_smaller_than; its gain per batch size: README, "Batch 1 and the cell's
    # kernels"). prevent_cse is for remat outside a loop; inside a scan XLA cannot merge
    # the two passes anyway.
    taps = self._weight_taps(batch, inputs.shape[1]) if train else None
    remat = nn.remat(cell_cls, prevent_cse=False, policy=save_smaller_than(
        batch * self.memory_size * self.memory_width))
    scan = nn.scan(remat, variable_broadcast='params',
                   variable_axes={'intermediates': 1}, split_rngs={'params': False},
                   in_axes=1, out_axes=1)
    _, (features, traces) = scan(
        controller_size=self.controller_size, memory_size=self.memory_size,
        memory_width=self.memory_width, num_read_heads=self.num_read_heads,
        num_write_heads=self.num_write_heads, shift_range=self.shift_range,
        frobenius_norm=self.frobenius_norm, controller_clip=self.controller_clip,
        controller_forget_bias=self.controller_forget_bias,
        write_sharpen_boost=self.write_sharpen_boost,
        name='cell', **cell_fields)(carry, (inputs, taps))
    return nn.Dense(self.output_size, name='readout')(features), traces
