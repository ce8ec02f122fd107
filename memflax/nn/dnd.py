"""Differentiable neural dictionary, DND (Pritzel et al. 2017, "Neural Episodic Control", §2).

A dictionary of (key h_i, value v_i) pairs, appended to as a sequence is read. A lookup
with query h returns a kernel-weighted mean of the values of the p nearest keys:

  N(h)   = the p keys h_i nearest to h in squared Euclidean distance ‖h − h_i‖²
  k_i    = s_i / (‖h − h_i‖² + δ)                  inverse-distance kernel, δ = 1e-3 (paper)
  w_i    = k_i / Σ_{j ∈ N(h)} k_j                  i ∈ N(h)
  out    = Σ_{i ∈ N(h)} w_i v_i

s_i ≥ 0 is an optional write strength per entry (1 in the paper; a learned write gate in
memflax.models.dnd): s_i = 0 makes an entry weigh nothing. The choice of N(h) is
piecewise constant, so it is made on stop_gradient'ed distances; the distances of the
chosen p are then recomputed from the gathered keys, so gradients reach the query and the
retrieved keys and values (the paper trains keys and values the same way). Empty or
invalid entries are never weighed; with no valid entry (or all s_i = 0) the output is 0.

Two forms:
  causal_lookup     the whole sequence at once (training): the query at step t looks up
                    among the entries written at steps s < t; capacity T, no overwriting.
                    Distances [B, T, T], masked causally, then lax.top_k over p.
  recurrent_lookup  a store of C slots carried through lax.scan. At each step: look up
                    (the p retrieved slots' last-used time becomes t), then write (k_t, v_t)
                    to the first empty slot while one is left, else to the least recently
                    used slot (lowest index among ties). With C ≥ T it returns exactly what
                    causal_lookup returns (entry s lives in slot s).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
DELTA = 1e-3  # the paper's δ


def squared_distances(queries: Array, keys: Array) -> Array:
  """queries [B, Q, d], keys [B, N, d] -> ‖q − k‖² [B, Q, N] as ‖q‖² − 2 q·k + ‖k‖² (one
  matmul instead of a [B, Q, N, d] difference), clamped at 0 against rounding."""
  cross = jnp.einsum('bqd,bnd->bqn', queries, keys)
  d2 = (jnp.sum(queries * queries, -1)[..., :, None] - 2.0 * cross
        + jnp.sum(keys * keys, -1)[..., None, :])
  return jnp.maximum(d2, 0.0)


def _take(table: Array, indices: Array) -> Array:
  """table [B, N, ...], indices [B, Q, p] -> table rows [B, Q, p, ...]."""
  return jax.vmap(lambda t, i: t[i])(table, indices)


def lookup(queries: Array, keys: Array, values: Array, valid: Array, num_neighbours: int,
           delta: float = DELTA, strength: Array | None = None) -> tuple[Array, dict]:
  """The p-nearest-neighbour read of the DND (equations above).

  queries [B, Q, d], keys [B, N, d], values [B, N, v], valid [B, Q, N] bool or any shape
  that broadcasts to it (which entries each query may see), strength [B, N] (None: all 1) ->
  (out [B, Q, v], info) with info
    'indices'   [B, Q, p] int32  the chosen entries, nearest first
    'valid'     [B, Q, p] bool   whether each chosen entry is a valid one
    'weights'   [B, Q, p]        w_i (0 for invalid), summing to 1 or, with no valid entry, 0
    'distances' [B, Q, p]        ‖h − h_i‖² of the chosen entries
  With N < p the store is padded with invalid entries, so the shapes always hold p.
  """
  p = num_neighbours
  num_entries = keys.shape[1]
  if strength is None:
    strength = jnp.ones(keys.shape[:2], queries.dtype)
  if num_entries < p:  # lax.top_k needs p ≤ N: pad with entries nobody can see
    pad = p - num_entries
    keys = jnp.pad(keys, ((0, 0), (0, pad), (0, 0)))
    values = jnp.pad(values, ((0, 0), (0, pad), (0, 0)))
    strength = jnp.pad(strength, ((0, 0), (0, pad)))
    valid = jnp.pad(jnp.broadcast_to(valid, queries.shape[:2] + (num_entries,)),
                    ((0, 0), (0, 0), (0, pad)))
  # Selection only: no gradient through the (piecewise constant) choice of the p entries.
  d2_all = jax.lax.stop_gradient(squared_distances(queries, keys))
  scores = jnp.where(valid, -d2_all, -jnp.inf)
  _, indices = jax.lax.top_k(scores, p)
  chosen_valid = jnp.take_along_axis(jnp.broadcast_to(valid, scores.shape), indices, axis=-1)

  # The chosen keys' distances again, exactly and differentiably: [B, Q, p].
  chosen_keys = _take(keys, indices)
  d2 = jnp.sum(jnp.square(queries[:, :, None, :] - chosen_keys), axis=-1)
  kernel = jnp.where(chosen_valid, _take(strength, indices) / (d2 + delta), 0.0)
  total = jnp.sum(kernel, axis=-1, keepdims=True)
  # No valid entry: total = 0 and the output is 0; the safe denominator keeps the gradient
  # finite there too (jnp.where alone would still differentiate k / 0).
  weights = kernel / jnp.where(total > 0, total, 1.0)
  out = jnp.einsum('bqp,bqpv->bqv', weights, _take(values, indices))
  return out, dict(indices=indices.astype(jnp.int32), valid=chosen_valid, weights=weights,
                   distances=d2)


def causal_lookup(queries: Array, keys: Array, values: Array, num_neighbours: int,
                  delta: float = DELTA, strength: Array | None = None,
                  query_block: int = 0) -> tuple[Array, dict]:
  """Parallel form: the query at step t reads the entries written at steps s < t.

  queries [B, T, d], keys [B, T, d], values [B, T, v], strength [B, T] (None: all 1) ->
  (out [B, T, v], info as `lookup`, indices being steps s < t). query_block > 0 computes
  the [B, T, T] distances in blocks of that many queries (lax.map), [B, block, T] at a time,
  to bound memory on long sequences; 0: all at once.
  """
  length = queries.shape[1]
  steps = jnp.arange(length)
  if query_block <= 0 or query_block >= length:
    valid = (steps[None, :] < steps[:, None])[None]  # [1, T, T]: entry s visible at t > s
    return lookup(queries, keys, values, valid, num_neighbours, delta, strength)
  blocks = -(-length // query_block)
  pad = blocks * query_block - length
  padded = jnp.pad(queries, ((0, 0), (0, pad), (0, 0)))
  q_blocks = padded.reshape(queries.shape[0], blocks, query_block, -1).swapaxes(0, 1)
  t_blocks = jnp.arange(blocks * query_block).reshape(blocks, query_block)

  def one_block(args):
    q, t = args
    valid = (steps[None, :] < t[:, None])[None]
    return lookup(q, keys, values, valid, num_neighbours, delta, strength)

  out, info = jax.lax.map(one_block, (q_blocks, t_blocks))
  # [blocks, B, block, ...] -> [B, T, ...]
  unblock = lambda a: a.swapaxes(0, 1).reshape(a.shape[1], -1, *a.shape[3:])[:, :length]
  return unblock(out), jax.tree.map(unblock, info)


def empty_store(batch_size: int, capacity: int, key_size: int, value_size: int,
                dtype=jnp.float32) -> dict:
  """A store of C empty slots: keys [B, C, d], values [B, C, v], strength [B, C] and
  last_used [B, C] int32 (−1 = empty; a slot is valid once written)."""
  return dict(keys=jnp.zeros((batch_size, capacity, key_size), dtype),
              values=jnp.zeros((batch_size, capacity, value_size), dtype),
              strength=jnp.zeros((batch_size, capacity), dtype),
              last_used=jnp.full((batch_size, capacity), -1, jnp.int32))


def read_then_write(store: dict, query: Array, key: Array, value: Array, strength: Array,
                    step: Array, num_neighbours: int, delta: float = DELTA
                    ) -> tuple[dict, Array, dict]:
  """One step of the recurrent form: (store, q [B, d], k [B, d], v [B, v], s [B], t) ->
  (store, out [B, v], info as `lookup` without the Q axis, plus 'slot' [B], where k was
  written).

  Read first (the store holds steps < t), stamping the valid retrieved slots with t; then
  write to argmin(last_used): the first empty slot (−1) if any, else the least recently
  used (written or retrieved) one.
  """
  out, info = lookup(query[:, None], store['keys'], store['values'],
                     (store['last_used'] >= 0)[:, None], num_neighbours, delta,
                     store['strength'])
  out, info = out[:, 0], {k: v[:, 0] for k, v in info.items()}
  rows = jnp.arange(query.shape[0])[:, None]
  stamped = jnp.where(info['valid'], step, store['last_used'][rows, info['indices']])
  last_used = store['last_used'].at[rows, info['indices']].set(stamped)
  slot = jnp.argmin(last_used, axis=-1)  # first minimum: empty slots in order, then LRU
  rows = rows[:, 0]
  store = dict(keys=store['keys'].at[rows, slot].set(key),
               values=store['values'].at[rows, slot].set(value),
               strength=store['strength'].at[rows, slot].set(strength),
               last_used=last_used.at[rows, slot].set(step))
  return store, out, {**info, 'slot': slot.astype(jnp.int32)}


def recurrent_lookup(queries: Array, keys: Array, values: Array, capacity: int,
                     num_neighbours: int, delta: float = DELTA, strength: Array | None = None,
                     store: dict | None = None) -> tuple[Array, dict, dict]:
  """Recurrent form with C = capacity slots (lax.scan over time).

  queries [B, T, d], keys [B, T, d], values [B, T, v], strength [B, T] (None: all 1),
  store: `empty_store` (None: empty) -> (out [B, T, v], info [B, T, ...] as
  `read_then_write` (indices are slots), the store after the last step).
  """
  batch, length, _ = queries.shape
  if strength is None:
    strength = jnp.ones((batch, length), queries.dtype)
  if store is None:
    store = empty_store(batch, capacity, keys.shape[-1], values.shape[-1], values.dtype)

  def step(store, xs):
    q, k, v, s, t = xs
    store, out, info = read_then_write(store, q, k, v, s, t, num_neighbours, delta)
    return store, (out, info)

  time_major = lambda a: jnp.moveaxis(a, 1, 0)
  xs = (*map(time_major, (queries, keys, values, strength)), jnp.arange(length, dtype=jnp.int32))
  store, (out, info) = jax.lax.scan(step, store, xs)
  batch_major = lambda a: jnp.moveaxis(a, 0, 1)
  return batch_major(out), jax.tree.map(batch_major, info), store


class DND(nn.Module):
  """A DND read and written within each sequence, with its projections.

  keys h = key_inputs W_h and queries q = query_inputs W_h share one projection W_h
  (as in NEC, keys and lookups are the same embedding of a state); values v = value_inputs W_v.
  Inputs [B, T, D_*], strength [B, T] (None: all 1) -> (out [B, T, value_size], info).
  capacity 0: causal_lookup (capacity T); > 0: recurrent_lookup with that many slots.
  """

  key_size: int
  value_size: int
  num_neighbours: int = 8
  delta: float = DELTA
  capacity: int = 0
  query_block: int = 0

  @nn.compact
  def __call__(self, query_inputs: Array, key_inputs: Array, value_inputs: Array,
               strength: Array | None = None) -> tuple[Array, dict]:
    project = nn.Dense(self.key_size, name='key')
    queries, keys = project(query_inputs), project(key_inputs)
    values = nn.Dense(self.value_size, name='value')(value_inputs)
    if self.capacity > 0:
      out, info, _ = recurrent_lookup(queries, keys, values, self.capacity,
                                      self.num_neighbours, self.delta, strength)
      return out, info
    return causal_lookup(queries, keys, values, self.num_neighbours, self.delta, strength,
                         self.query_block)
