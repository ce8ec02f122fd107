"""The regularisers as pure functions: exact values and gradients on hand-made pytrees,
Fisher estimates against numpy and closed forms, reservoir sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.continual import replay, strategies

THETA = {'a': jnp.array([1.0, 2.0]), 'b': {'c': jnp.array([[3.0]])}}
ANCHOR0 = {'a': jnp.array([0.0, 0.0]), 'b': {'c': jnp.array([[1.0]])}}
ANCHOR1 = {'a': jnp.array([1.0, 1.0]), 'b': {'c': jnp.array([[2.0]])}}
FISHER0 = {'a': jnp.array([0.5, 2.0]), 'b': {'c': jnp.array([[0.0]])}}
FISHER1 = {'a': jnp.array([1.0, 0.0]), 'b': {'c': jnp.array([[4.0]])}}


def test_past_weights_decay_with_age():
  np.testing.assert_allclose(strategies.past_weights(3, 0.5, [1.0, 2.0, 3.0]), [0.25, 1.0, 3.0])
  np.testing.assert_allclose(strategies.past_weights(2, 1.0), [1.0, 1.0])


def test_l2_penalty_value():
  # ‖θ − θ0‖² = 1 + 4 + 4 = 9, ‖θ − θ1‖² = 0 + 1 + 1 = 2; λ (0.5·9 + 2·2) with λ = 0.1.
  value = strategies.l2_penalty(THETA, [ANCHOR0, ANCHOR1], [0.5, 2.0], 0.1)
  assert float(value) == pytest.approx(0.1 * (4.5 + 4.0), rel=1e-6)


def test_ewc_penalty_value_and_gradient():
  lam, w = 3.0, [1.0, 0.5]
  value = strategies.ewc_penalty(THETA, [ANCHOR0, ANCHOR1], [FISHER0, FISHER1], w, lam)
  # F0·d0² = 0.5·1 + 2·4 + 0·4 = 8.5; F1·d1² = 0 + 0 + 4·1 = 4.
  assert float(value) == pytest.approx(0.5 * lam * (8.5 + 0.5 * 4.0), rel=1e-6)
  grad = jax.grad(strategies.ewc_penalty)(THETA, [ANCHOR0, ANCHOR1], [FISHER0, FISHER1], w, lam)
  # Direct: λ Σ_i w_i F_i (θ − θ_i).
  direct = jax.tree.map(lambda t, a0, a1, f0, f1: lam * (w[0] * f0 * (t - a0) + w[1] * f1 * (t - a1)),
                        THETA, ANCHOR0, ANCHOR1, FISHER0, FISHER1)
  for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direct)):
    np.testing.assert_allclose(g, d, rtol=1e-6)
  np.testing.assert_allclose(grad['a'], [3.0 * 0.5 * 1.0 + 3.0 * 0.5 * 1.0 * 0.0,
                                         3.0 * 2.0 * 2.0], rtol=1e-6)


def test_online_fisher_is_a_decayed_sum():
  f2 = jax.tree.map(lambda x: x + 1.0, FISHER0)
  total = strategies.online_fisher([FISHER0, FISHER1, f2], 0.5)
  for got, a, b, c in zip(*(jax.tree.leaves(t) for t in (total, FISHER0, FISHER1, f2))):
    np.testing.assert_allclose(got, 0.25 * a + 0.5 * b + c, rtol=1e-6)


def _linear_examples(n=64, t=5, d_in=3, d_out=2, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, t, d_in)).astype(np.float32)
  y = (rng.random((n, t, d_out)) < 0.5).astype(np.float32)
  mask = (rng.random((n, t)) < 0.7).astype(np.float32)
  mask[:, 0] = 1.0
  params = {'w': jnp.asarray(rng.normal(size=(d_in, d_out)).astype(np.float32)),
            'b': jnp.asarray(rng.normal(size=(d_out,)).astype(np.float32))}
  return params, dict(inputs=jnp.asarray(x), targets=jnp.asarray(y), mask=jnp.asarray(mask))


def _bce_loss(p, ex):
  """Per-sequence loss of a linear 'model': BCE averaged over masked bits (as the tasks)."""
  z = ex['inputs'] @ p['w'] + p['b']
  per_bit = jnp.maximum(z, 0) - z * ex['targets'] + jnp.log1p(jnp.exp(-jnp.abs(z)))
  return jnp.sum(per_bit * ex['mask'][:, None]) / (jnp.sum(ex['mask']) * z.shape[-1])


def test_empirical_fisher_matches_numpy():
  params, ex = _linear_examples()
  fisher = strategies.fisher_diagonal(_bce_loss, params, ex, kind='empirical', chunk_size=16)
  x, y, m = (np.asarray(ex[k], np.float64) for k in ('inputs', 'targets', 'mask'))
  z = x @ np.asarray(params['w'], np.float64) + np.asarray(params['b'], np.float64)
  resid = (1 / (1 + np.exp(-z)) - y) * m[..., None] / (m.sum(1)[:, None, None] * 2)
  grad_w = np.einsum('nta,ntd->nad', x, resid)
  grad_b = resid.sum(1)
  np.testing.assert_allclose(fisher['w'], (grad_w ** 2).mean(0), rtol=1e-4)
  np.testing.assert_allclose(fisher['b'], (grad_b ** 2).mean(0), rtol=1e-4)


def test_exact_fisher_sampling_matches_closed_form():
  params, ex = _linear_examples(n=32)

  def sample(p, e, k):
    z = e['inputs'] @ p['w'] + p['b']
    return {**e, 'targets': jax.random.bernoulli(k, jax.nn.sigmoid(z)).astype(jnp.float32)}

  fisher = strategies.fisher_diagonal(_bce_loss, params, ex, kind='exact',
                                      key=jax.random.PRNGKey(0), sample_targets=sample,
                                      num_samples=3000, chunk_size=32)
  # Closed form for independent Bernoulli outputs: (1/n_s²) Σ_k m σ(1−σ) (∂z_k/∂θ)².
  x, m = (np.asarray(ex[k], np.float64) for k in ('inputs', 'mask'))
  z = x @ np.asarray(params['w'], np.float64) + np.asarray(params['b'], np.float64)
  s = 1 / (1 + np.exp(-z))
  v = s * (1 - s) * m[..., None] / (m.sum(1)[:, None, None] * 2) ** 2
  exact_w = np.einsum('nta,ntd->nad', x ** 2, v).mean(0)
  exact_b = v.sum(1).mean(0)
  np.testing.assert_allclose(fisher['w'], exact_w, rtol=0.06)
  np.testing.assert_allclose(fisher['b'], exact_b, rtol=0.06)
  # ... and it is not the empirical Fisher (the labels here are random, not the model's).
  empirical = strategies.fisher_diagonal(_bce_loss, params, ex, kind='empirical', chunk_size=32)
  assert np.max(np.abs(np.asarray(empirical['b']) - exact_b) / exact_b) > 0.2


def test_fisher_rejects_bad_arguments():
  params, ex = _linear_examples(n=10)
  with pytest.raises(ValueError, match='chunks of 4'):
    strategies.fisher_diagonal(_bce_loss, params, ex, chunk_size=4)
  with pytest.raises(ValueError, match='Fisher kind'):
    strategies.fisher_diagonal(_bce_loss, params, ex, kind='true', chunk_size=5)


def test_reservoir_fills_then_replaces_uniformly():
  slots = replay.reservoir_update(replay.empty_slots(4), 0, 0, 3, seed=0)
  np.testing.assert_array_equal(slots, [[0, 0], [0, 1], [0, 2], [-1, -1]])
  # Deterministic: same arguments, same buffer.
  a = replay.reservoir_update(slots, 3, 1, 1000, seed=7)
  np.testing.assert_array_equal(a, replay.reservoir_update(slots, 3, 1, 1000, seed=7))
  # Every stream item ends up kept with probability M/n: over many seeds, task 0's three
  # items hold on average 3·M/n = 3·4/1003 slots after 1000 items of task 1.
  kept = np.mean([np.sum(replay.reservoir_update(slots, 3, 1, 1000, seed=s)[:, 0] == 0)
                  for s in range(3000)])
  assert kept == pytest.approx(12 / 1003, abs=0.006)
  # Halves of an equal stream: about M/2 slots each.
  both = [replay.reservoir_update(replay.reservoir_update(replay.empty_slots(64), 0, 0, 500, s),
                                  500, 1, 500, s) for s in range(200)]
  assert np.mean([np.sum(b[:, 0] == 1) for b in both]) == pytest.approx(32, abs=1.0)
