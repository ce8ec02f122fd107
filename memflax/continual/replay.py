"""Replay: a fixed-size reservoir of past tasks' training sequences, mixed into each step.

The buffer has M slots. The stream it samples is every training sequence of every task
in order (task i contributes num_train_steps × batch_size sequences, item k of task i =
row k mod B of step k div B's batch). Algorithm R (Vitter 1985) keeps each item of the
stream seen so far in the buffer with equal probability M/n: item n (0-based, over all
tasks) fills slot n while n < M, else replaces slot j ~ U{0..n} when j < M. The draws
come from numpy's PCG64 seeded with (seed, task), so the buffer after task i is a pure
function of the config; it is stored in snapshot i (slot table and the sequences
themselves), so a resumed run replays exactly what an uninterrupted one would.

While task t trains, the replay term of each step is Σ_{i<t, n_i>0} α̃_i ℓ_i, where ℓ_i
is task i's loss on replay_batch_size sequences drawn uniformly (with replacement) from
its n_i buffered ones with key fold_in(fold_in(replay_key, step), i). The draw is made
for the global batch and each device takes its contiguous share, so any device count
sees the same sequences (and per-device means average exactly to the global mean).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memflax import parallel

EMPTY = -1


def reservoir_update(slots: np.ndarray, seen: int, task: int, num_new: int,
                     seed: int) -> np.ndarray:
  """slots int64 [M, 2] of (task, item) or EMPTY rows, after `seen` stream items -> the
  slots after task `task`'s items 0..num_new-1 arrive (a new array)."""
  slots = np.array(slots, np.int64, copy=True)
  size = len(slots)
  rng = np.random.Generator(np.random.PCG64([int(seed), int(task), 0x5EED]))
  n = seen + np.arange(num_new, dtype=np.int64)
  draws = rng.integers(0, n + 1)  # j ~ U{0..n} for every item, drawn up front
  filling = n < size
  slots[n[filling]] = np.stack([np.full(filling.sum(), task), np.nonzero(filling)[0]], 1)
  for k in np.nonzero(~filling & (draws < size))[0]:  # in stream order: later items win
    slots[draws[k]] = (task, k)
  return slots


def empty_slots(size: int) -> np.ndarray:
  return np.full((size, 2), EMPTY, np.int64)


def training_examples(trainer, items: np.ndarray) -> dict:
  """Task sequences number `items` (int [n]) of `trainer`'s training stream, regenerated
  from (seed, step) exactly as the training step made them: {'inputs', 'targets', 'mask'}
  as numpy [n, ...] (inputs already padded to the interface width)."""
  batch_size = trainer.config.batch_size
  steps, rows = items // batch_size, items % batch_size
  unique, where = np.unique(steps, return_inverse=True)
  if trainer.host_fed:
    tokens = np.stack([trainer.data.batch_for_step(trainer.config.seed, int(s), batch_size,
                                                   trainer.task.seq_length, 0, 1)
                       for s in unique])
    picked = tokens[where, rows]
    batch = trainer.task.batch_from_tokens(jnp.asarray(picked))
  else:
    keys = jax.vmap(lambda s: jax.random.fold_in(trainer.data_key, s))(jnp.asarray(unique))
    batches = jax.jit(jax.vmap(lambda k: trainer.task.make_batch(k, batch_size)))(keys)
    batch = jax.tree.map(lambda x: x[where, rows], batches)
  return {k: np.asarray(jax.device_get(batch[k])) for k in ('inputs', 'targets', 'mask')}


def replay_term(buffers: dict, tasks_by_index: dict, weights: dict, batch_size: int,
                key: jax.Array, scale: float):
  """The regulariser hook (model, params, step, device) -> (scale·Σ_i w_i ℓ_i, metrics).

  buffers: {i: {'inputs', 'targets', 'mask'} numpy [n_i, ...]}; tasks_by_index: {i:
  PaddedTask}; weights: {i: α̃_i}. batch_size sequences per past task per step, split
  over devices.
  """
  def term(model, params, step, device):
    per_device = batch_size // jax.lax.axis_size(parallel.DATA_AXIS)
    total, metrics = jnp.zeros((), jnp.float32), {}
    for i, examples in sorted(buffers.items()):
      n = len(examples['inputs'])
      picks = jax.random.randint(jax.random.fold_in(jax.random.fold_in(key, step), i),
                                 (batch_size,), 0, n)
      mine = jax.lax.dynamic_slice(picks, (device * per_device,), (per_device,))
      batch = {k: jnp.asarray(v)[mine] for k, v in examples.items()}
      logits, _ = model.apply({'params': params}, batch['inputs'])
      loss, _ = tasks_by_index[i].loss_and_metrics(logits, batch)
      total = total + weights[i] * loss
      metrics[f'replay_loss_{i}'] = loss
    total = scale * total
    return total, {**metrics, 'penalty': total}
  return term
