"""Sparse Access Memory (SAM; Rae et al. 2016, "Scaling Memory-Augmented Neural Networks
with Sparse Reads and Writes"): memory ops that touch O(K) rows per step, and a time
loop whose backward pass needs O(N·W + T·K·W) memory instead of O(T·N·W).

Shapes: B batch, N slots, W slot width, H read heads, K slots per read head,
J = H·K + 1 slots per write (the previously read slots and the least-used one).

Equations (Rae et al. §3; δ = 0.005):
  read    S_h   = the K rows j with the largest cos(q_h, M_t(j))        (no gradient)
          w^R_h = softmax_{j∈S_h}(β_h cos(q_h, M_t(j))),  r_h = Σ_{j∈S_h} w^R_hj M_t(j)
  write   w^W   = α (γ w^R_{t−1} + (1 − γ) I^U_t)           over the J slots
          M_t   = (1 − I^U_t 1ᵀ) ⊙ M_{t−1} + w^W aᵀ         the least-used row is erased
  usage   last_t(j) = t where w^W_t(j) + w^R_t(j) > δ       ("time since last access",
          I^U_t = one-hot of argmin_j last_{t−1}(j)          the paper's U^(2))
With several read heads, w^R_{t−1} is their mean, so w^W still sums to α. The write
happens before the read, as in the paper, so a step can read what it just wrote.

Every step is `M_t = M_{t−1} + scatter_add(widx, Δ)` with Δ [B,J,W] computed from the
J old rows, and reads gather H·K rows of M_t; memory enters a step only through those
rows. `run`'s custom VJPs exploit that (gradients equal plain autodiff's to rounding,
tests/test_sam.py); the top-K selection and the least-used slot are piecewise constant
and carry no gradient in either:
  'sparse'  keeps per step the indices, the J overwritten rows and the H·K rows read.
            Going backwards it needs no memory, only the cotangent dM, updated at those
            rows; dM is built in the dead forward memory's buffer, so one N×W buffer is
            alive at any time.
  'revert'  keeps only the indices and the J overwritten rows, and going backwards
            reverts each write (`M_{t−1}[widx] = old rows`) to rebuild the rows read,
            which then enter through `rows = M_{t−1}[ridx] + E Δ`, E_ij = [ridx_i =
            widx_j]: fewest bytes per step, but M and dM are both alive.
Both keep the small controller state per step, as autodiff would.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memflax.nn import memory as mem

Array = jax.Array

DELTA = 0.005  # an access counts for usage when its weight exceeds this (Rae et al.)


# --- Pure sparse-memory ops ---------------------------------------------------------


def gather_rows(memory: Array, indices: Array) -> Array:
  """memory [B,N,W], indices [B,...] int -> rows [B,...,W]."""
  return jax.vmap(lambda m, i: m[i])(memory, indices)


def scatter_add_rows(memory: Array, indices: Array, rows: Array) -> Array:
  """memory [B,N,W] + rows [B,J,W] at indices [B,J] (duplicates sum) -> [B,N,W]."""
  return jax.vmap(lambda m, i, r: m.at[i].add(r))(memory, indices, rows)


def set_rows(memory: Array, indices: Array, rows: Array) -> Array:
  """memory [B,N,W] with rows [B,J,W] stored at indices [B,J] -> [B,N,W].
  Duplicate indices must carry identical rows (true when reverting a write)."""
  return jax.vmap(lambda m, i, r: m.at[i].set(r))(memory, indices, rows)


def select_reads(memory: Array, queries: Array, k: int, block: int = 0) -> Array:
  """The K slots most cosine-similar to each query: memory [B,N,W], queries [B,H,W]
  -> indices [B,H,K] int32. A selection, so it carries no gradient (O(N·W) per query;
  an approximate index such as jax.lax.approx_max_k can replace top_k on TPU).
  Ranks by q·M_j / ‖M_j‖: dividing by ‖q‖ too would not change the order.

  block 0 scores all N rows at once: fastest, but the scores and row norms are [B,H,N]
  and [B,N] temporaries. block > 0 scans the rows `block` at a time and keeps each
  block's top K (the global top K is in their union), so the temporaries are O(block)
  and O(N/block·K) and only the memory itself grows with N; it costs a loop per step
  (+25 % step time at N = 65,536 on a CPU). Both give the same indices, ties included."""
  memory, queries = jax.lax.stop_gradient(memory), jax.lax.stop_gradient(queries)
  n = memory.shape[1]
  k = min(k, n)
  if block <= 0 or n <= max(block, k):
    return jax.lax.top_k(_scores(memory, queries), k)[1]
  block = max(block, k)
  num_blocks = -(-n // block)

  def block_top_k(i):
    start = jnp.minimum(i * block, n - block)  # the last block may overlap the one before
    scores = _scores(jax.lax.dynamic_slice_in_dim(memory, start, block, axis=1), queries)
    idx = start + jnp.arange(block, dtype=jnp.int32)
    scores = jnp.where(idx >= i * block, scores, -jnp.inf)  # the overlap was seen already
    vals, pos = jax.lax.top_k(scores, k)
    return vals, start + pos

  vals, idx = jax.lax.map(block_top_k, jnp.arange(num_blocks, dtype=jnp.int32))
  # [nb,B,H,K] -> [B,H,nb·K] in block order: earlier blocks hold lower indices and each
  # block's ties are in index order, so ties resolve as one top_k over all N would.
  vals = jnp.moveaxis(vals, 0, -2).reshape(*queries.shape[:2], -1)
  idx = jnp.moveaxis(idx, 0, -2).reshape(*queries.shape[:2], -1)
  return jnp.take_along_axis(idx, jax.lax.top_k(vals, k)[1], -1)


def _scores(memory: Array, queries: Array) -> Array:
  """q·M_j / ‖M_j‖ for each query and row: memory [B,N,W], queries [B,H,W] -> [B,H,N]."""
  dots = jnp.einsum('bhw,bnw->bhn', queries, memory)
  inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(memory), axis=-1) + mem._NORM_EPS)
  return dots * inv_norm[:, None, :]


def row_cosine(queries: Array, rows: Array) -> Array:
  """queries [B,H,W], rows [B,H,K,W] -> cos [B,H,K], with the NaN-safe norms of
  memflax.nn.memory.cosine_similarity (an all-zero row has similarity 0)."""
  dots = jnp.einsum('bhw,bhkw->bhk', queries, rows)
  q_norm = jnp.sqrt(jnp.sum(jnp.square(queries), -1) + mem._NORM_EPS)[..., None]
  r_norm = jnp.sqrt(jnp.sum(jnp.square(rows), -1) + mem._NORM_EPS)
  return dots / (q_norm * r_norm)


def read_rows(queries: Array, beta: Array, rows: Array) -> tuple[Array, Array]:
  """Sparse content read over gathered rows: w = softmax_K(β cos(q, rows)), r = Σ w rows.
  queries [B,H,W], beta [B,H], rows [B,H,K,W] -> (weights [B,H,K], reads [B,H,W])."""
  w = jax.nn.softmax(beta[..., None] * row_cosine(queries, rows), axis=-1)
  return w, jnp.einsum('bhk,bhkw->bhw', w, rows)


def least_used(last_access: Array) -> Array:
  """The least recently accessed slot (lowest index on ties): last_access [B,N] -> [B]."""
  return jnp.argmin(last_access, axis=-1).astype(jnp.int32)


def write_slots(prev_read_idx: Array, lru: Array) -> Array:
  """prev_read_idx [B,H,K], lru [B] -> widx [B,J]: the previously read slots, then I^U."""
  return jnp.concatenate([prev_read_idx.reshape(lru.shape[0], -1), lru[:, None]], axis=1)


def write_weighting(prev_read_w: Array, alpha: Array, gamma: Array) -> Array:
  """w^W = α (γ mean_h w^R_{t−1} + (1 − γ) I^U) over `write_slots`.
  prev_read_w [B,H,K], alpha/gamma [B] -> [B,J]."""
  batch, heads = prev_read_w.shape[:2]
  reuse = (gamma / heads)[:, None] * prev_read_w.reshape(batch, -1)
  return alpha[:, None] * jnp.concatenate([reuse, (1.0 - gamma)[:, None]], axis=1)


def write_delta(old_rows: Array, weights: Array, add: Array) -> Array:
  """Row changes of the SAM write on the J slots (the last is I^U, erased first):
  old_rows [B,J,W], weights [B,J], add [B,W] -> Δ [B,J,W] with M_t = M_{t−1} + Σ_j Δ_j
  at widx_j. The erase is −old row on the least-used entry only, so a slot that is
  both a previous read and I^U ends up exactly (Σ its weights) · a."""
  erase = jnp.zeros(weights.shape, old_rows.dtype).at[:, -1].set(1.0)
  return weights[..., None] * add[:, None, :] - erase[..., None] * old_rows


def rows_after_write(old_read_rows: Array, read_idx: Array, write_idx: Array,
                     delta: Array) -> Array:
  """M_t[ridx] from M_{t−1}[ridx] and this step's write: old + E Δ, E_ij = [ridx_i = widx_j].
  old_read_rows [B,H,K,W], read_idx [B,H,K], write_idx [B,J], delta [B,J,W] -> [B,H,K,W]."""
  match = (read_idx[..., None] == write_idx[:, None, None, :]).astype(delta.dtype)
  return old_read_rows + jnp.einsum('bhkj,bjw->bhkw', match, delta)


def record_access(last_access: Array, indices: Array, weights: Array, t: Array) -> Array:
  """last(j) = t for each slot whose summed weight this step exceeds δ (the paper's
  w^W(j) + w^R(j) > δ; a slot may appear several times in `indices`, so weights are
  summed over equal indices with an [L,L] match, O(L²) rather than O(N)).
  last_access [B,N] int32, indices/weights [B,L] -> [B,N]."""
  same = (indices[:, :, None] == indices[:, None, :]).astype(weights.dtype)
  total = jnp.einsum('bij,bj->bi', same, weights)
  # Scatter-max: t is the newest stamp, so duplicates agree and old stamps survive.
  stamp = jnp.where(total > DELTA, t, -1).astype(last_access.dtype)
  return jax.vmap(lambda u, i, s: u.at[i].max(s))(last_access, indices, stamp)


# --- The SAM step and its time loop ------------------------------------------------


class Sizes(NamedTuple):
  """Static sizes of a SAM core (hashable, so it can be a static argument)."""
  memory_size: int
  memory_width: int
  num_read_heads: int
  top_k: int
  controller_size: int
  controller_clip: float
  scan_block: int = 0  # rows scored at a time by select_reads (0: all N at once)


def init_params(key: Array, sizes: Sizes, input_size: int, output_size: int,
                forget_bias: float = 1.0) -> dict:
  """Parameters of the LSTM controller, the memory interface and the readout (lecun
  normal weights, zero biases, the LSTM forget gate biased by `forget_bias`)."""
  c, h, w = sizes.controller_size, sizes.num_read_heads, sizes.memory_width
  k1, k2, k3 = jax.random.split(key, 3)
  init = jax.nn.initializers.lecun_normal()
  gates_in = input_size + h * w + c
  lstm_b = jnp.zeros((4 * c,)).at[c:2 * c].set(forget_bias)  # gate order i, f, g, o
  return dict(
      lstm=dict(kernel=init(k1, (gates_in, 4 * c)), bias=lstm_b),
      interface=dict(kernel=init(k2, (c, interface_size(sizes))),
                     bias=jnp.zeros((interface_size(sizes),))),
      readout=dict(kernel=init(k3, (c + h * w, output_size)), bias=jnp.zeros((output_size,))))


def interface_size(sizes: Sizes) -> int:
  """queries H·W, strengths H, add vector W, write gate α, interpolation gate γ."""
  h, w = sizes.num_read_heads, sizes.memory_width
  return h * w + h + w + 2


class Small(NamedTuple):
  """The differentiable per-step state that is not memory (O(B·(C + H·K + H·W)))."""
  h: Array          # [B,C] controller output
  c: Array          # [B,C] controller cell
  reads: Array      # [B,H,W] r_{t−1}
  read_w: Array     # [B,H,K] w^R_{t−1} on its slots


class Slots(NamedTuple):
  """The non-differentiable state: where the last reads went and when slots were used."""
  read_idx: Array     # [B,H,K] int32
  last_access: Array  # [B,N] int32, −1 = never
  t: Array            # [] int32


def _controller(params, small: Small, x: Array, sizes: Sizes):
  """LSTM step and memory interface: x [B,D] -> (h, c, interface dict)."""
  batch = x.shape[0]
  inp = jnp.concatenate([x, small.reads.reshape(batch, -1), small.h], axis=-1)
  z = inp @ params['lstm']['kernel'] + params['lstm']['bias']
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * small.c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  raw = h @ params['interface']['kernel'] + params['interface']['bias']
  raw = jnp.clip(raw, -sizes.controller_clip, sizes.controller_clip)
  nh, w = sizes.num_read_heads, sizes.memory_width
  q, beta, add, gates = jnp.split(raw, [nh * w, nh * w + nh, nh * w + nh + w], axis=-1)
  iface = dict(queries=q.reshape(batch, nh, w), beta=jax.nn.softplus(beta),
               add=jnp.tanh(add), alpha=jax.nn.sigmoid(gates[:, 0]),
               gamma=jax.nn.sigmoid(gates[:, 1]))
  return h, c, iface


def _write_part(params, small: Small, x: Array, old_w: Array, sizes: Sizes):
  """Controller and write: -> (h, c, iface, write weights [B,J], Δ [B,J,W])."""
  h, c, iface = _controller(params, small, x, sizes)
  ww = write_weighting(small.read_w, iface['alpha'], iface['gamma'])
  return h, c, iface, ww, write_delta(old_w, ww, iface['add'])


def _read_part(params, h, c, iface, rows):
  """Read the K rows of each head (M_t[ridx], rows [B,H,K,W]) and the output."""
  rw, reads = read_rows(iface['queries'], iface['beta'], rows)
  out = jnp.concatenate([h, reads.reshape(h.shape[0], -1)], -1)
  y = out @ params['readout']['kernel'] + params['readout']['bias']
  return Small(h, c, reads, rw), y


def _core(params, small, x, old_w, old_r, widx, ridx, sizes):
  """The differentiable step with every index given: what the backward pass replays
  from rows of M_{t−1} alone. -> (next small state, y [B,O], Δ [B,J,W])."""
  h, c, iface, _, delta = _write_part(params, small, x, old_w, sizes)
  rows = rows_after_write(old_r, ridx, widx, delta)
  small, y = _read_part(params, h, c, iface, rows)
  return small, y, delta


def _step(params, memory, small, slots, x, sizes):
  """One full SAM step on the whole memory. -> (memory, small, slots, y, record)."""
  widx = write_slots(slots.read_idx, least_used(slots.last_access))
  old_w = gather_rows(memory, widx)
  h, c, iface, ww, delta = _write_part(params, small, x, old_w, sizes)
  # Nothing reads M_{t−1} after this scatter, so it updates the one buffer in place
  # (the reads gather M_t, which equals _core's M_{t−1} rows + E Δ).
  memory = scatter_add_rows(memory, widx, delta)
  ridx = select_reads(memory, iface['queries'], sizes.top_k, sizes.scan_block)
  rows = gather_rows(memory, ridx)
  new_small, y = _read_part(params, h, c, iface, rows)
  batch = x.shape[0]
  touched = jnp.concatenate([widx, ridx.reshape(batch, -1)], 1)
  touched_w = jnp.concatenate([ww, new_small.read_w.reshape(batch, -1)], 1)
  last = record_access(slots.last_access, touched, jax.lax.stop_gradient(touched_w), slots.t)
  # Weights in the records are traces: detached, so only ys carry gradient.
  record = dict(widx=widx, ridx=ridx, old_w=old_w, rows=rows, write_w=jax.lax.stop_gradient(ww),
                read_w=jax.lax.stop_gradient(new_small.read_w))
  return memory, new_small, Slots(ridx, last, slots.t + 1), y, record


def initial_state(sizes: Sizes, batch: int, dtype=jnp.float32):
  """Zero memory, never-used slots, no previous read (weights 0 on slots 0..K−1).
  -> (memory [B,N,W], Small, Slots)."""
  n, w, nh = sizes.memory_size, sizes.memory_width, sizes.num_read_heads
  k = min(sizes.top_k, n)
  c = sizes.controller_size
  small = Small(h=jnp.zeros((batch, c), dtype), c=jnp.zeros((batch, c), dtype),
                reads=jnp.zeros((batch, nh, w), dtype), read_w=jnp.zeros((batch, nh, k), dtype))
  idx = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (batch, nh, k))
  slots = Slots(idx, jnp.full((batch, n), -1, jnp.int32), jnp.zeros((), jnp.int32))
  return jnp.zeros((batch, n, w), dtype), small, slots


def _scan(params, xs, memory, small, slots, sizes):
  """Forward over time: xs [T,B,D] -> (final memory, ys [T,B,O], records [T,...], smalls)."""
  def body(carry, x):
    memory, small, slots = carry
    memory, new_small, slots, y, record = _step(params, memory, small, slots, x, sizes)
    return (memory, new_small, slots), (y, record, small)

  (memory, _, _), (ys, records, smalls) = jax.lax.scan(body, (memory, small, slots), xs)
  return memory, ys, records, smalls


def run_autodiff(params, xs: Array, memory: Array, small: Small, slots: Slots, sizes: Sizes):
  """SAM over a sequence, differentiated by plain autodiff of the scan (the reference).
  xs [T,B,D] -> (ys [T,B,O], records: per-step indices/weights, each [T,B,...])."""
  _, ys, records, _ = _scan(params, xs, memory, small, slots, sizes)
  return ys, {k: v for k, v in records.items() if k not in ('old_w', 'rows')}


def run(params, xs: Array, memory: Array, small: Small, slots: Slots, sizes: Sizes,
        backprop: str = 'sparse'):
  """SAM over a sequence, xs [T,B,D] -> (ys [T,B,O], records [T,B,...]), differentiated
  by one of three backward passes that give the same gradients (to rounding):
    'sparse'   keeps per step the J written-over rows and the H·K rows read (M_t's);
               the backward pass needs no memory at all, only the cotangent dM: one
               N×W buffer alive at a time (the forward's is dead by then).
    'revert'   keeps per step only the J written-over rows and reverts each write going
               backwards to rebuild the rows read: the fewest bytes per step (longest
               sequences), but the memory and dM are both alive in the backward pass.
    'autodiff' plain autodiff of the scan (the reference).
  """
  if backprop == 'sparse':
    return _run_rows(params, xs, memory, small, slots, sizes)
  if backprop == 'revert':
    return _run_revert(params, xs, memory, small, slots, sizes)
  if backprop == 'autodiff':
    return run_autodiff(params, xs, memory, small, slots, sizes)
  raise ValueError(f"backprop must be 'sparse', 'revert' or 'autodiff', got {backprop!r}")


def _zero_cotangent(x):
  """Integer state has float0 cotangents."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return jnp.zeros(x.shape, jax.dtypes.float0)
  return jnp.zeros_like(x)


def _zeroed_in_place(x: Array, blocks: int = 8) -> Array:
  """Zeros of x's shape [B,N,W] written into x's own (dead) buffer, N/blocks slots at a
  time. A fresh jnp.zeros would be a second N×W buffer: XLA shares one zero constant with
  the forward's M_0, which the forward then has to copy. Slice updates in a loop stay in
  place, and the zero block is a broadcast fused into each update, never materialised."""
  n = x.shape[1]
  step = -(-n // blocks)

  def body(i, acc):
    start = jnp.minimum(i * step, n - step)  # the last block may overlap the one before
    zero = jnp.zeros((x.shape[0], step, x.shape[2]), x.dtype)
    return jax.lax.dynamic_update_slice_in_dim(acc, zero, start, axis=1)

  return jax.lax.fori_loop(0, -(-n // step), body, x)


def _zero_first(tree):
  return jax.tree.map(lambda a: jnp.zeros_like(a[0]), tree)


# 'revert': residuals are indices and the rows each write overwrote.

@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _run_revert(params, xs, memory, small, slots, sizes):
  return run_autodiff(params, xs, memory, small, slots, sizes)


def _revert_fwd(params, xs, memory, small, slots, sizes):
  final, ys, records, smalls = _scan(params, xs, memory, small, slots, sizes)
  # Residuals: O(T·B·(J·W + C + H·K·W)) plus one final memory; never T memories.
  keep = (params, xs, final, smalls, records['widx'], records['ridx'], records['old_w'])
  return (ys, {k: v for k, v in records.items() if k not in ('old_w', 'rows')}), (keep, slots)


def _revert_bwd(sizes, res, cotangents):
  (params, xs, final, smalls, widx, ridx, old_w), slots0 = res
  dys = cotangents[0]  # records are indices and detached weights: no cotangent flows

  def body(carry, inp):
    memory, dmemory, dsmall, dparams = carry
    x, dy, small, wi, ri, ow = inp
    memory = set_rows(memory, wi, ow)           # undo this step's write: M_{t−1}
    orr = gather_rows(memory, ri)
    _, vjp = jax.vjp(lambda p, s, x_, a, b: _core(p, s, x_, a, b, wi, ri, sizes),
                     params, small, x, ow, orr)
    dp, ds, dx, dow, dor = vjp((dsmall, dy, gather_rows(dmemory, wi)))
    # M_t = M_{t−1} + scatter(Δ(old rows)): the identity part passes dM through.
    dmemory = scatter_add_rows(dmemory, wi, dow)
    dmemory = scatter_add_rows(dmemory, ri.reshape(ri.shape[0], -1),
                               dor.reshape(dor.shape[0], -1, dor.shape[-1]))
    dparams = jax.tree.map(jnp.add, dparams, dp)
    return (memory, dmemory, ds, dparams), dx

  carry = (final, jnp.zeros_like(final), _zero_first(smalls), jax.tree.map(jnp.zeros_like, params))
  (_, dmemory0, dsmall0, dparams), dxs = jax.lax.scan(
      body, carry, (xs, dys, smalls, widx, ridx, old_w), reverse=True)
  return dparams, dxs, dmemory0, dsmall0, jax.tree.map(_zero_cotangent, slots0)


_run_revert.defvjp(_revert_fwd, _revert_bwd)


# 'sparse': residuals are indices, the overwritten rows and the rows read (of M_t).

@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _run_rows(params, xs, memory, small, slots, sizes):
  return run_autodiff(params, xs, memory, small, slots, sizes)


def _rows_fwd(params, xs, memory, small, slots, sizes):
  final, ys, records, smalls = _scan(params, xs, memory, small, slots, sizes)
  # The final memory's values are not needed: its buffer becomes dM (below).
  keep = (params, xs, final, smalls, records['widx'], records['ridx'], records['old_w'],
          records['rows'])
  return (ys, {k: v for k, v in records.items() if k not in ('old_w', 'rows')}), (keep, slots)


def _rows_bwd(sizes, res, cotangents):
  (params, xs, final, smalls, widx, ridx, old_w, rows), slots0 = res
  dys = cotangents[0]

  def body(carry, inp):
    dmemory, dsmall, dparams = carry
    x, dy, small, wi, ri, ow, rw = inp
    # Replay the write half (controller, Δ), then differentiate the read of M_t's rows.
    (h, c, iface, _, delta), write_vjp = jax.vjp(
        lambda p, s, x_, a: _write_part(p, s, x_, a, sizes), params, small, x, ow)
    _, read_vjp = jax.vjp(_read_part, params, h, c, iface, rw)
    dp_read, dh, dc, diface, drows = read_vjp((dsmall, dy))
    # dM_t gains the read's cotangent; Δ's cotangent is dM_t at the written rows.
    batch = ri.shape[0]
    dmemory = scatter_add_rows(dmemory, ri.reshape(batch, -1),
                               drows.reshape(batch, -1, drows.shape[-1]))
    zero_ww = jnp.zeros((batch, wi.shape[1]), delta.dtype)
    dp_write, ds, dx, dow = write_vjp((dh, dc, diface, zero_ww, gather_rows(dmemory, wi)))
    # M_t = M_{t−1} + scatter(Δ(old rows)): the identity part passes dM through.
    dmemory = scatter_add_rows(dmemory, wi, dow)
    dparams = jax.tree.map(lambda a, b, c_: a + b + c_, dparams, dp_read, dp_write)
    return (dmemory, ds, dparams), dx

  carry = (_zeroed_in_place(final), _zero_first(smalls),
           jax.tree.map(jnp.zeros_like, params))
  (dmemory0, dsmall0, dparams), dxs = jax.lax.scan(
      body, carry, (xs, dys, smalls, widx, ridx, old_w, rows), reverse=True)
  return dparams, dxs, dmemory0, dsmall0, jax.tree.map(_zero_cotangent, slots0)


_run_rows.defvjp(_rows_fwd, _rows_bwd)
