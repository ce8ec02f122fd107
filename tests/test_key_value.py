"""memflax.nn.key_value against the seed's read equation (seed 003 §4.2.1)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from memflax.nn import key_value as kv

TOL = dict(rtol=1e-5, atol=1e-5)


def _rand(seed, *shape, scale=1.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def np_read(q, keys, values):
  """r = Σ_i exp(qᵀk_i) / Σ_j exp(qᵀk_j) · v_i, one query at a time, in float64."""
  q, keys, values = (np.asarray(a, np.float64) for a in (q, keys, values))
  flat = q.reshape(-1, q.shape[-1])
  reads, weights = [], []
  for query in flat:
    scores = np.array([query @ k for k in keys])
    e = np.exp(scores - scores.max())
    w = e / e.sum()
    reads.append(sum(w[i] * values[i] for i in range(len(keys))))
    weights.append(w)
  return (np.stack(reads).reshape(*q.shape[:-1], values.shape[-1]),
          np.stack(weights).reshape(*q.shape[:-1], len(keys)))


def test_address_and_read_match_equation():
  q, keys, values = _rand(0, 2, 3, 4), _rand(1, 6, 4), _rand(2, 6, 5)
  w = kv.address(q, keys)
  r = kv.read(w, values)
  ref_r, ref_w = np_read(q, keys, values)
  assert w.shape == (2, 3, 6) and r.shape == (2, 3, 5)
  np.testing.assert_allclose(w, ref_w, **TOL)
  np.testing.assert_allclose(r, ref_r, **TOL)
  np.testing.assert_allclose(np.sum(w, -1), 1.0, **TOL)


def test_module_reads_its_params_for_any_leading_shape():
  memory = kv.KeyValueMemory(num_slots=7, value_size=3)
  q = _rand(3, 2, 4, 5)
  params = memory.init(jax.random.PRNGKey(0), q)['params']
  assert params['keys'].shape == (7, 5) and params['values'].shape == (7, 3)
  for query in (q, q[0], q[0, 0]):
    r, w = memory.apply({'params': params}, query, return_weights=True)
    ref_r, ref_w = np_read(query, params['keys'], params['values'])
    assert r.shape == query.shape[:-1] + (3,) and w.shape == query.shape[:-1] + (7,)
    np.testing.assert_allclose(r, ref_r, **TOL)
    np.testing.assert_allclose(w, ref_w, **TOL)
    np.testing.assert_allclose(memory.apply({'params': params}, query), r, **TOL)


def test_sharp_query_retrieves_one_value():
  keys = np.eye(4, dtype=np.float32)
  values = _rand(4, 4, 3)
  r = kv.read(kv.address(50.0 * keys[2], keys), values)
  np.testing.assert_allclose(r, values[2], atol=1e-5)


def test_key_init_keeps_initial_scores_unit_scale():
  d_k = 64
  memory = kv.KeyValueMemory(num_slots=512, value_size=2)
  q = _rand(5, 256, d_k)  # unit-variance components, like a LayerNorm output
  params = memory.init(jax.random.PRNGKey(1), q)['params']
  scores = np.asarray(q) @ np.asarray(params['keys']).T
  assert 0.9 < np.std(scores) < 1.1
  _, w = memory.apply({'params': params}, q, return_weights=True)
  assert np.max(w) < 0.5, 'initial reads should blend several slots'


def test_gradients_match_finite_differences():
  q, keys, values = _rand(6, 3, 4, scale=0.5), _rand(7, 5, 4, scale=0.5), _rand(8, 5, 2)

  @jax.jit
  def f(q, keys, values):
    return kv.read(kv.address(q, keys), values)

  check_grads(f, (q, keys, values), order=1, modes=['rev'], atol=1e-2, rtol=1e-2, eps=1e-3)
  check_grads(f, (q, keys, values), order=2, modes=['rev'], atol=5e-2, rtol=5e-2, eps=1e-2)

  memory = kv.KeyValueMemory(num_slots=5, value_size=2)
  params = memory.init(jax.random.PRNGKey(2), q)['params']
  check_grads(jax.jit(lambda p, q: memory.apply({'params': p}, q)), (params, q), order=1,
              modes=['rev'], atol=1e-2, rtol=1e-2, eps=1e-3)


def test_bf16_query_runs_and_stays_finite():
  memory = kv.KeyValueMemory(num_slots=16, value_size=8)
  q = jnp.asarray(_rand(9, 2, 5, 32, scale=3.0), jnp.bfloat16)
  params = memory.init(jax.random.PRNGKey(3), q)['params']
  r, w = memory.apply({'params': params}, q, return_weights=True)
  assert r.shape == (2, 5, 8) and w.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(r, np.float32)))
  np.testing.assert_allclose(np.sum(w, -1), 1.0, rtol=1e-5)


def test_jit_does_not_retrace():
  memory = kv.KeyValueMemory(num_slots=8, value_size=4)
  q = _rand(10, 2, 3, 6)
  params = memory.init(jax.random.PRNGKey(4), q)['params']

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(params, q):
    return memory.apply({'params': params}, q)

  chex.clear_trace_counter()
  f(params, q)
  f(params, q * 2.0)
