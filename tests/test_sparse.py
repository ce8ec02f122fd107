"""memflax.nn.sparse: top-M softmax/attention against a numpy reference, M = N against
the dense ops, sparsity of weights, gradients and writes, numerical gradients, dtypes
and tracing."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from memflax.nn import attention
from memflax.nn import memory as mem
from memflax.nn import sparse

TOL = dict(rtol=1e-5, atol=1e-6)
# Jitted entry points: op-by-op dispatch compiles every primitive separately, which
# costs more than one compile per function on this test's small, shared CPU.
content_weighting = jax.jit(sparse.sparse_content_weighting, static_argnums=3)
sparse_write = jax.jit(sparse.sparse_write)
sparse_read = jax.jit(sparse.sparse_read)
sparse_attention = jax.jit(sparse.sparse_attention, static_argnums=3)
GRAD_TOL = dict(order=1, modes=['rev'], eps=1e-3, atol=1e-2, rtol=1e-2)


def _normal(seed, shape, scale=1.0):
  return scale * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _np_top_m_softmax(scores, m, mask=None):
  """Per row: argsort the allowed scores, keep the M best, softmax over them (float64)."""
  scores = np.asarray(scores, np.float64)
  mask = np.ones(scores.shape, bool) if mask is None else np.broadcast_to(mask, scores.shape)
  out = np.zeros_like(scores)
  for row in np.ndindex(scores.shape[:-1]):
    allowed = np.flatnonzero(mask[row])
    if allowed.size == 0:
      continue
    chosen = allowed[np.argsort(-scores[row][allowed])[:m]]
    e = np.exp(scores[row][chosen] - scores[row][chosen].max())
    out[row][chosen] = e / e.sum()
  return out


def _np_attention(q, k, v, m, mask=None):
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  scores = np.einsum('...qd,...kd->...qk', q, k) / np.sqrt(q.shape[-1])
  return np.einsum('...qk,...kd->...qd', _np_top_m_softmax(scores, m, mask), v)


def _dense_attention(q, k, v, mask=None):
  scores = jnp.einsum('...qd,...kd->...qk', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    scores = jnp.where(mask, scores, -jnp.inf)
  return jnp.einsum('...qk,...kd->...qd', jax.nn.softmax(scores, axis=-1), v)


def _random_mask(seed, shape, m):
  """Random mask with a fully masked row and rows allowing fewer than M positions."""
  mask = np.random.default_rng(seed).random(shape) < 0.6
  mask[..., 0, :] = False
  mask[..., 1, :] = False
  mask[..., 1, :m - 1] = True
  return mask


def _min_gap(scores, m):
  """Smallest gap between the M-th and (M+1)-th score over all rows (∞ when M = N)."""
  s = -np.sort(-np.asarray(scores), axis=-1)
  return np.inf if m >= s.shape[-1] else float(np.min(s[..., m - 1] - s[..., m]))


# ---------------------------------------------------------------- top_m_softmax


@pytest.mark.parametrize('m', [1, 3, 7])
@pytest.mark.parametrize('masked', [False, True])
def test_top_m_softmax_matches_numpy(m, masked):
  scores = _normal(0, (2, 5, 11), scale=2.0)
  mask = _random_mask(1, scores.shape, m) if masked else None
  got = sparse.top_m_softmax(jnp.asarray(scores), m, None if mask is None else jnp.asarray(mask))
  np.testing.assert_allclose(got, _np_top_m_softmax(scores, m, mask), **TOL)


def test_top_m_softmax_with_m_at_least_n_is_dense_softmax():
  scores = jnp.asarray(_normal(2, (3, 4, 9), scale=3.0))
  dense = jax.nn.softmax(scores, axis=-1)
  np.testing.assert_allclose(sparse.top_m_softmax(scores, 9), dense, rtol=0, atol=1e-6)
  np.testing.assert_allclose(sparse.top_m_softmax(scores, 50), dense, rtol=0, atol=1e-6)


def test_top_m_softmax_has_exactly_m_nonzeros_and_masked_rows():
  scores = jnp.asarray(_normal(3, (4, 6, 10)))
  w = np.asarray(sparse.top_m_softmax(scores, 3))
  np.testing.assert_array_equal(np.count_nonzero(w, axis=-1), 3)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)

  mask = _random_mask(4, scores.shape, 3)
  w = np.asarray(sparse.top_m_softmax(scores, 3, jnp.asarray(mask)))
  assert np.all(w[~mask] == 0.0)
  np.testing.assert_array_equal(np.count_nonzero(w, axis=-1),
                                np.minimum(mask.sum(-1), 3))
  np.testing.assert_array_equal(w[..., 0, :], 0.0)  # nothing allowed: zeros, not NaN


def test_top_m_softmax_gradient_is_zero_outside_the_selection():
  scores = _normal(5, (3, 12))
  probe = jnp.asarray(_normal(6, (3, 12)))
  grad = np.asarray(jax.grad(lambda s: jnp.sum(sparse.top_m_softmax(s, 4) * probe))(
      jnp.asarray(scores)))
  selected = np.zeros(scores.shape, bool)
  np.put_along_axis(selected, np.argsort(-scores, axis=-1)[:, :4], True, axis=-1)
  assert np.all(grad[~selected] == 0.0)
  assert np.all(grad[selected] != 0.0)


# ---------------------------------------------------------------- sparse_attention


@pytest.mark.parametrize('shape', [(2, 5, 9), (2, 3, 5, 9)])  # [B,T,.] and [B,H,T,.]
@pytest.mark.parametrize('masked', [False, True])
def test_sparse_attention_matches_numpy(shape, masked):
  *lead, tq, tk = shape
  q = _normal(7, (*lead, tq, 4))
  k = _normal(8, (*lead, tk, 4), scale=2.0)
  v = _normal(9, (*lead, tk, 6))  # dv ≠ d
  # A per-batch mask broadcast over heads, as a padding mask would be.
  mask = _random_mask(10, (lead[0], *([1] * (len(lead) - 1)), tq, tk), 3) if masked else None
  got = sparse_attention(q, k, v, 3, None if mask is None else jnp.asarray(mask))
  assert got.shape == (*lead, tq, 6)
  np.testing.assert_allclose(got, _np_attention(q, k, v, 3, mask), rtol=1e-5, atol=1e-5)


def test_sparse_attention_with_m_equal_to_keys_is_dense_attention():
  q, k, v = _normal(11, (2, 3, 6, 5)), _normal(12, (2, 3, 8, 5)), _normal(13, (2, 3, 8, 4))
  causal = np.tril(np.ones((6, 8), bool), k=2)  # every query allows ≥ 3 keys
  for mask in (None, jnp.asarray(causal)):
    np.testing.assert_allclose(sparse_attention(q, k, v, 8, mask),
                               _dense_attention(q, k, v, mask), rtol=0, atol=1e-6)
  # The drop-in matches the project's dense attention, fully masked queries included.
  for mask in (None, jnp.asarray(_random_mask(14, (2, 1, 6, 8), 3))):
    out, weights = sparse.sparse_dot_product_attention(q, k, v, mask, m=8)
    want_out, want_weights = attention.dot_product_attention(q, k, v, mask)
    np.testing.assert_allclose(out, want_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(weights, want_weights, rtol=0, atol=1e-6)


def test_sparse_dot_product_attention_weights_are_top_m():
  q, k, v = _normal(15, (2, 2, 5, 4)), _normal(16, (2, 2, 9, 4)), _normal(17, (2, 2, 9, 3))
  mask = _random_mask(18, (2, 1, 5, 9), 3)
  out, weights = sparse.sparse_dot_product_attention(q, k, v, jnp.asarray(mask), m=3)
  scores = np.einsum('...qd,...kd->...qk', q, k) / 2.0
  np.testing.assert_allclose(weights, _np_top_m_softmax(scores, 3, mask), **TOL)
  np.testing.assert_allclose(out, sparse_attention(q, k, v, 3, jnp.asarray(mask)),
                             rtol=0, atol=1e-6)


def test_sparse_attention_only_selected_values_get_gradient():
  q, k, v = _normal(14, (1, 1, 4)), _normal(15, (1, 10, 4)), _normal(16, (1, 10, 3))
  grad_v = jax.grad(lambda v: jnp.sum(sparse_attention(q, k, v, 3)))(jnp.asarray(v))
  scores = (q @ k.transpose(0, 2, 1))[0, 0]
  touched = np.any(np.asarray(grad_v)[0] != 0.0, axis=-1)
  np.testing.assert_array_equal(np.flatnonzero(touched), np.sort(np.argsort(-scores)[:3]))


def _separated_attention_inputs(m, gap):
  """q, k, v whose top-M sets sit well clear of ties, so finite differences keep them."""
  for seed in range(100):
    q, k = _normal(100 + seed, (2, 2, 3, 4)), _normal(200 + seed, (2, 2, 6, 4))
    if _min_gap(np.einsum('...qd,...kd->...qk', q, k) / 2.0, m) > gap:
      return jnp.asarray(q), jnp.asarray(k), jnp.asarray(_normal(300 + seed, (2, 2, 6, 3)))
  raise AssertionError('no well-separated inputs found')


def test_sparse_attention_numerical_gradients():
  q, k, v = _separated_attention_inputs(m=3, gap=0.1)
  # jit: check_grads evaluates many times, and op-by-op dispatch is slow on a busy CPU.
  check_grads(jax.jit(lambda q, k, v: sparse_attention(q, k, v, 3)), (q, k, v),
              **GRAD_TOL)


# ---------------------------------------------------------------- NTM addressing


def _ntm_inputs(seed, b=2, h=2, n=10, w=6):
  memory = jnp.asarray(_normal(seed, (b, n, w)))
  keys = jnp.asarray(_normal(seed + 1, (b, h, w)))
  beta = jnp.asarray(np.abs(_normal(seed + 2, (b, h))) * 5.0 + 1.0)
  erase = jax.nn.sigmoid(jnp.asarray(_normal(seed + 3, (b, h, w))))
  add = jnp.tanh(jnp.asarray(_normal(seed + 4, (b, h, w))))
  return memory, keys, beta, erase, add


def test_sparse_content_weighting_matches_numpy_and_dense():
  memory, keys, beta, _, _ = _ntm_inputs(20)
  scores = np.asarray(beta[..., None] * mem.cosine_similarity(keys, memory))
  idx, w = content_weighting(memory, keys, beta, 4)
  assert idx.shape == w.shape == (2, 2, 4)
  dense = np.asarray(sparse.densify(idx, w, 10))
  np.testing.assert_allclose(dense, _np_top_m_softmax(scores, 4), **TOL)
  np.testing.assert_array_equal(np.count_nonzero(dense, axis=-1), 4)
  full = sparse.densify(*content_weighting(memory, keys, beta, 10), 10)
  np.testing.assert_allclose(full, mem.content_weighting(memory, keys, beta), rtol=0, atol=1e-6)


def test_sparse_read_is_weighted_sum_of_selected_rows():
  memory, keys, beta, _, _ = _ntm_inputs(30)
  for m in (3, 10):
    idx, w = content_weighting(memory, keys, beta, m)
    np.testing.assert_allclose(sparse_read(memory, idx, w),
                               mem.read(memory, sparse.densify(idx, w, 10)), rtol=0, atol=1e-6)


def test_sparse_write_matches_dense_write_and_leaves_other_rows_bit_identical():
  memory, keys, beta, erase, add = _ntm_inputs(40, h=3)
  keys = keys.at[:, 1].set(keys[:, 0] + 0.05)  # two heads on overlapping slots
  for m in (10, 3):  # M = N, then the sparse case inspected below
    idx, w = content_weighting(memory, keys, beta, m)
    got = np.asarray(sparse_write(memory, idx, w, erase, add))
    want = mem.write(memory, sparse.densify(idx, w, 10), erase, add)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

  idx = np.asarray(idx)
  assert len(set(idx[0, 0]) & set(idx[0, 1])) > 0  # the overlap case is exercised
  for b in range(2):
    touched = np.zeros(10, bool)
    touched[idx[b].ravel()] = True
    assert 0 < touched.sum() < 10
    np.testing.assert_array_equal(got[b, ~touched], np.asarray(memory)[b, ~touched])
    assert np.all(np.any(got[b, touched] != np.asarray(memory)[b, touched], axis=-1))


def test_sparse_write_changes_exactly_m_rows_with_one_head():
  memory, keys, beta, erase, add = _ntm_inputs(50, h=1, n=16)
  idx, w = content_weighting(memory, keys, beta, 5)
  got = np.asarray(sparse_write(memory, idx, w, erase, add))
  changed = np.any(got != np.asarray(memory), axis=-1)
  np.testing.assert_array_equal(changed.sum(-1), 5)
  for b in range(2):
    np.testing.assert_array_equal(np.flatnonzero(changed[b]), np.sort(np.asarray(idx)[b, 0]))


def test_sparse_address_reduces_to_dense_address():
  memory, keys, beta, _, _ = _ntm_inputs(60)
  rng = np.random.default_rng(61)
  w_prev = jax.nn.softmax(jnp.asarray(rng.standard_normal((2, 2, 10)), jnp.float32))
  gate = jnp.asarray(rng.random((2, 2)), jnp.float32)
  shift = jax.nn.softmax(jnp.asarray(rng.standard_normal((2, 2, 3)), jnp.float32))
  gamma = 1.0 + jnp.asarray(rng.random((2, 2)), jnp.float32)
  args = (memory, w_prev, keys, beta, gate, shift, gamma)
  dense = mem.address(*args)
  np.testing.assert_allclose(sparse.densify(*sparse.sparse_address(*args, 10), 10), dense,
                             rtol=0, atol=1e-6)
  # With M < N the content step is sparse too, so compare with a numpy pipeline.
  w_c = _np_top_m_softmax(np.asarray(beta[..., None] * mem.cosine_similarity(keys, memory)), 4)
  w_s = np.asarray(mem.sharpen(mem.circular_shift(
      mem.interpolate(jnp.asarray(w_c, jnp.float32), w_prev, gate), shift), gamma))
  want = _np_top_m_softmax(np.log(w_s), 4)
  got = np.asarray(sparse.densify(*sparse.sparse_address(*args, 4), 10))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.count_nonzero(got, axis=-1), 4)


def test_sparse_addressing_read_write_numerical_gradients():
  for seed in range(70, 170):
    memory, keys, beta, erase, add = _ntm_inputs(seed, b=1, n=8, w=4)
    if _min_gap(beta[..., None] * mem.cosine_similarity(keys, memory), 3) > 0.2:
      break
  else:
    raise AssertionError('no well-separated inputs found')

  def f(memory, keys, beta, erase, add):
    idx, w = content_weighting(memory, keys, beta, 3)
    return sparse_write(memory, idx, w, erase, add), sparse_read(memory, idx, w)

  check_grads(jax.jit(f), (memory, keys, beta, erase, add), **GRAD_TOL)


# ---------------------------------------------------------------- dtypes and tracing


def test_bfloat16_runs_and_stays_finite():
  q, k, v = (jnp.asarray(_normal(s, (2, 2, 5, 8)), jnp.bfloat16) for s in (80, 81, 82))
  out = sparse_attention(q, k, v, 3)
  assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out)))
  ref = sparse_attention(*(a.astype(jnp.float32) for a in (q, k, v)), 3)
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=5e-2)

  memory, keys, beta, erase, add = (a.astype(jnp.bfloat16) for a in _ntm_inputs(83))
  idx, w = content_weighting(memory, keys, beta, 4)
  new = sparse_write(memory, idx, w, erase, add)
  read = sparse_read(memory, idx, w)
  assert new.dtype == read.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(new))) and bool(jnp.all(jnp.isfinite(read)))
  np.testing.assert_allclose(w.astype(jnp.float32).sum(-1), 1.0, atol=1e-2)


def test_jit_does_not_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def attend(q, k, v, mask):
    return sparse.sparse_attention(q, k, v, 3, mask)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(memory, keys, beta, erase, add):
    idx, w = sparse.sparse_content_weighting(memory, keys, beta, 3)
    return sparse.sparse_write(memory, idx, w, erase, add)

  mask = jnp.asarray(np.tril(np.ones((5, 7), bool), k=2))
  for seed in (90, 91):
    attend(*(jnp.asarray(_normal(seed + i, (2, 5 if i == 0 else 7, 4))) for i in range(3)), mask)
    step(*_ntm_inputs(seed))


def test_multi_head_attention_takes_sparse_attention():
  """MultiHeadAttention with top-M attention: M = T equals dense, M < T keeps M keys a query."""
  import functools

  from memflax.nn.attention import MultiHeadAttention
  from memflax.nn.sparse import sparse_dot_product_attention
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 8)), jnp.float32)
  dense = MultiHeadAttention(num_heads=2)
  params = dense.init(jax.random.PRNGKey(0), x)
  full = MultiHeadAttention(num_heads=2, attention_fn=functools.partial(
      sparse_dot_product_attention, m=6))
  np.testing.assert_allclose(full.apply(params, x), dense.apply(params, x), atol=1e-6)
  top2 = MultiHeadAttention(num_heads=2, attention_fn=functools.partial(
      sparse_dot_product_attention, m=2))
  _, state = top2.apply(params, x, mutable=['intermediates'])
  weights = state['intermediates']['attention_weights'][0]
  np.testing.assert_array_equal((weights > 0).sum(-1), 2)
