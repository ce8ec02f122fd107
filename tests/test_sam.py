"""memflax.nn.sam / memflax.models.sam: the SAM equations against a dense numpy
reference, gradients of the reverting backward pass against plain autodiff, memory of
the backward pass independent of T·N, the model interface and config, and a short
training run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax import models
from memflax.models import sam as sam_model
from memflax.nn import sam
from short_training import train_copy

SIZES = sam.Sizes(memory_size=16, memory_width=6, num_read_heads=2, top_k=3,
                  controller_size=10, controller_clip=20.0)
B, T, D, O = 3, 12, 5, 4


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
  return np.log1p(np.exp(x))


def _np_sam(params, xs, sizes, memory0=None):
  """Rae et al. 2016 §3 with dense N-vectors, one example at a time (float64).
  xs [T,B,D] -> ys [T,B,O]."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  n, w, nh, k, c = (sizes.memory_size, sizes.memory_width, sizes.num_read_heads,
                    sizes.top_k, sizes.controller_size)
  xs = np.asarray(xs, np.float64)
  ys = np.zeros((xs.shape[0], xs.shape[1], p['readout']['bias'].shape[0]))
  for b in range(xs.shape[1]):
    memory = np.zeros((n, w)) if memory0 is None else np.asarray(memory0[b], np.float64).copy()
    last = -np.ones(n)
    h, cell, reads, read_w = np.zeros(c), np.zeros(c), np.zeros((nh, w)), np.zeros((nh, n))
    for t, x in enumerate(xs[:, b]):
      z = np.concatenate([x, reads.ravel(), h]) @ p['lstm']['kernel'] + p['lstm']['bias']
      i, f, g, o = np.split(z, 4)
      cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(g)
      h = _sigmoid(o) * np.tanh(cell)
      raw = np.clip(h @ p['interface']['kernel'] + p['interface']['bias'], -20, 20)
      q = raw[:nh * w].reshape(nh, w)
      beta = _softplus(raw[nh * w:nh * w + nh])
      add = np.tanh(raw[nh * w + nh:nh * w + nh + w])
      alpha, gamma = _sigmoid(raw[-2]), _sigmoid(raw[-1])
      lru = np.zeros(n)
      lru[int(np.argmin(last))] = 1.0
      write_w = alpha * (gamma * read_w.mean(0) + (1 - gamma) * lru)
      memory = memory * (1 - lru[:, None]) + np.outer(write_w, add)
      read_w = np.zeros((nh, n))
      for hd in range(nh):
        norms = np.sqrt((memory ** 2).sum(1) + 1e-16) * np.sqrt(q[hd] @ q[hd] + 1e-16)
        cos = memory @ q[hd] / norms
        chosen = np.argsort(-cos, kind='stable')[:k]
        e = np.exp(beta[hd] * cos[chosen] - (beta[hd] * cos[chosen]).max())
        read_w[hd, chosen] = e / e.sum()
      reads = read_w @ memory
      last[write_w + read_w.sum(0) > sam.DELTA] = t
      ys[t, b] = np.concatenate([h, reads.ravel()]) @ p['readout']['kernel'] + p['readout']['bias']
  return ys


@pytest.fixture(scope='module')
def setup():
  params = sam.init_params(jax.random.PRNGKey(0), SIZES, D, O)
  # Larger interface weights than the init gives: sharper reads, gates away from 0.5.
  params['interface']['kernel'] = params['interface']['kernel'] * 3.0
  xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, D))
  return params, xs


@pytest.mark.parametrize('scan_block', [0, 5])  # 5: blocks of 16 slots, the last overlapping
def test_forward_matches_dense_numpy_reference(setup, scan_block):
  params, xs = setup
  sizes = SIZES._replace(scan_block=scan_block)
  # From a zero memory every written row is a multiple of one add vector at first, so
  # cosines tie exactly and float rounding would pick the slots; random rows do not tie.
  memory0 = jax.random.normal(jax.random.PRNGKey(7), (B, SIZES.memory_size, SIZES.memory_width))
  _, small, slots = sam.initial_state(sizes, B)
  ys, rec = jax.jit(sam.run, static_argnums=5)(params, xs, memory0, small, slots, sizes)
  np.testing.assert_allclose(ys, _np_sam(params, xs, SIZES, memory0), rtol=1e-4, atol=1e-5)
  # The write goes to the H·K slots read last step plus one least-used slot.
  assert rec['widx'].shape == (T, B, 2 * 3 + 1) and rec['ridx'].shape == (T, B, 2, 3)
  np.testing.assert_array_equal(rec['widx'][1:, :, :-1], rec['ridx'][:-1].reshape(T - 1, B, -1))


@pytest.mark.parametrize('n, block, k', [(23, 4, 3), (23, 7, 5), (64, 16, 8), (10, 2, 4)])
def test_blocked_similarity_scan_selects_what_one_pass_selects(n, block, k):
  rng = np.random.default_rng(n * block + k)
  memory = rng.standard_normal((3, n, 5)).astype(np.float32)
  # Ties the blocks must break as one top_k does (lowest slot first): all-zero rows
  # (score 0) across block boundaries, and copies of one row (equal scores).
  memory[0, ::3] = 0.0
  memory[1, 1::2] = memory[1, 0]
  memory[2] = 0.0
  queries = rng.standard_normal((3, 2, 5)).astype(np.float32)
  got = sam.select_reads(jnp.asarray(memory), jnp.asarray(queries), k, block)
  one_pass = sam.select_reads(jnp.asarray(memory), jnp.asarray(queries), k, 0)
  np.testing.assert_array_equal(got, one_pass)
  # Against numpy: a stable descending sort of q·M_j / ‖M_j‖ (scores in float32 as
  # above, so rounding cannot reorder near-equal rows differently).
  norms = np.sqrt(np.square(memory).sum(-1) + 1e-16)
  scores = np.einsum('bhw,bnw->bhn', queries, memory) * (1 / norms)[:, None, :]
  want = np.argsort(-scores, axis=-1, kind='stable')[..., :k]
  np.testing.assert_array_equal(np.sort(got, -1), np.sort(want, -1))
  np.testing.assert_array_equal(got[2], np.broadcast_to(np.arange(k), (2, k)))


def test_write_erases_least_used_row_and_adds_even_when_it_was_also_read():
  memory = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 3)), jnp.float32)
  widx = jnp.array([[2, 4, 4]])          # slot 4: a previous read and the least-used slot
  weights = jnp.array([[0.2, 0.3, 0.5]])
  add = jnp.array([[1.0, -2.0, 0.5]])
  delta = sam.write_delta(sam.gather_rows(memory, widx), weights, add)
  got = sam.scatter_add_rows(memory, widx, delta)
  m = np.asarray(memory[0], np.float64)
  want = m.copy()
  want[4] = 0.0                                   # (1 − I^U 1ᵀ) ⊙ M
  for j, wt in zip([2, 4, 4], [0.2, 0.3, 0.5]):  # + w^W aᵀ
    want[j] += wt * np.asarray(add[0])
  np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)
  # Reads of the same step see the written rows through the match matrix.
  ridx = jnp.array([[[4, 0, 2]]])
  rows = sam.rows_after_write(sam.gather_rows(memory, ridx), ridx, widx, delta)
  np.testing.assert_allclose(rows[0, 0], want[[4, 0, 2]], rtol=1e-6, atol=1e-6)


def test_usage_sums_duplicate_accesses_and_least_used_breaks_ties_low():
  last = jnp.array([[-1, -1, 3, -1, 0]], jnp.int32)
  assert int(sam.least_used(last)[0]) == 0
  # Slot 1 is touched twice at 0.003 (sum 0.006 > δ); slot 3 once at 0.004 (< δ).
  got = sam.record_access(last, jnp.array([[1, 3, 1, 0]]),
                          jnp.array([[0.003, 0.004, 0.003, 0.9]]), jnp.int32(7))
  np.testing.assert_array_equal(got, [[7, 7, 3, -1, 0]])
  assert int(sam.least_used(got)[0]) == 3


def _loss(run, params, xs, memory0):
  memory, small, slots = sam.initial_state(SIZES, B)
  ys, _ = run(params, xs, memory0, small, slots, SIZES)
  # Weights every output unit and step differently, so no gradient is symmetric.
  return jnp.sum(jnp.sin(ys) * jnp.linspace(0.5, 1.5, ys.size).reshape(ys.shape))


@pytest.mark.parametrize('backprop', ['sparse', 'revert'])
def test_sparse_backward_passes_equal_autodiff(setup, backprop):
  params, xs = setup
  # A random initial memory: its gradient has to travel back through every write.
  memory0 = jax.random.normal(jax.random.PRNGKey(5), (B, SIZES.memory_size, SIZES.memory_width))
  grad = lambda run: jax.jit(jax.grad(lambda p, x, m: _loss(run, p, x, m), argnums=(0, 1, 2)))
  want = grad(sam.run_autodiff)(params, xs, memory0)
  got = grad(functools.partial(sam.run, backprop=backprop))(params, xs, memory0)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert float(jnp.max(jnp.abs(w))) > 1e-3  # every gradient is really exercised
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  # The initial memory only matters through reads of rows never overwritten since:
  # rows are both nonzero and exactly zero in its gradient.
  dm = np.abs(np.asarray(got[2])).sum(-1)
  assert (dm > 0).any() and (dm == 0).any()


def _grad_peak_bytes(backprop, n, steps, sizes=None):
  sizes = sizes or SIZES._replace(memory_size=n, memory_width=32, num_read_heads=1, top_k=8)
  params = sam.init_params(jax.random.PRNGKey(0), sizes, D, O)
  xs = jnp.zeros((steps, 2, D))

  def loss(p, x):
    ys, _ = sam.run(p, x, *sam.initial_state(sizes, 2), sizes, backprop)
    return jnp.sum(ys)

  ma = jax.jit(jax.grad(loss)).lower(params, xs).compile().memory_analysis()
  return (ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes
          - ma.alias_size_in_bytes)


@pytest.mark.parametrize('backprop, memories', [('sparse', 1), ('revert', 2)])
def test_backward_memory_does_not_grow_with_steps_times_slots(backprop, memories):
  state = 2 * 4096 * 32 * 4  # one memory of the batch, in bytes
  short, long = (_grad_peak_bytes(backprop, 4096, steps) for steps in (16, 256))
  # Each extra step keeps its touched rows (9 written + 8 read, or 9), indices and
  # controller state (a few KB here), never a memory (1 MiB), as autodiff of a dense
  # write does.
  per_step = (long - short) / (256 - 16)
  assert per_step < 0.01 * state, (short, long)
  # 'sparse' needs one N×W buffer at a time (the memory, then its cotangent), 'revert'
  # both at once; the rest (usage, similarities, parameters) is a fraction of one.
  assert memories * state < short < (memories + 0.5) * state, (short, state)


def _beyond_memory_bytes(n, scan_block):
  sizes = SIZES._replace(memory_size=n, memory_width=32, num_read_heads=1, top_k=8,
                         scan_block=scan_block)
  return _grad_peak_bytes('sparse', n, 16, sizes) - 2 * n * 32 * 4


def test_blocked_similarity_scan_leaves_only_usage_growing_with_slots():
  # Per extra slot and sequence (batch 2): the int32 usage stamp (4 B) always; one pass
  # adds its [B,H,N] scores and [B,N] row norms (about 8 B more), a scan in blocks of
  # 1,024 rows only its per-block top 8 (8·8/1,024 B).
  small, large = 8192, 65536
  per_slot = {block: (_beyond_memory_bytes(large, block) - _beyond_memory_bytes(small, block))
              / (2 * (large - small)) for block in (0, 1024)}
  assert per_slot[1024] < 4.5, per_slot
  assert per_slot[0] > 7.5, per_slot


def test_model_interface_traces_and_config():
  inputs = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 7, 9)), jnp.float32)
  model = sam_model.Model(output_size=8, controller_size=16, memory_size=12, memory_width=6,
                          num_read_heads=2, top_k=3)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)
  logits, traces = jax.jit(model.apply)(variables, inputs)
  assert logits.shape == (2, 7, 8)
  assert traces['read_slots'].shape == traces['read_slot_weights'].shape == (2, 7, 2, 3)
  assert traces['write_slots'].shape == (2, 7, 7)
  np.testing.assert_allclose(traces['read_slot_weights'].sum(-1), 1.0, rtol=1e-5)
  # Every backprop computes the same function.
  for backprop in ('revert', 'autodiff'):
    ref, _ = jax.jit(model.clone(backprop=backprop).apply)(variables, inputs)
    np.testing.assert_array_equal(logits, ref)
  with pytest.raises(ValueError, match='backprop'):
    model.clone(backprop="dense").init(jax.random.PRNGKey(0), inputs)

  # (That every config names every model field is tests/test_configs.py's job.)
  assert 'sam' in models.available()


@pytest.mark.slow
def test_short_copy_training_cuts_the_loss():
  model = sam_model.Model(output_size=8, controller_size=64, memory_size=16, memory_width=8,
                          top_k=4)
  first, last = train_copy(model, steps=300)
  assert np.isfinite(last)
  assert last < 0.7 * first, (first, last)
