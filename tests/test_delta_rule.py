"""The delta rule and linear attention (memflax/nn/delta_rule.py): the recurrent form against
a numpy loop of the published equations, the chunkwise form against the recurrent one
(outputs and gradients), and the rule at the limits of its gates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.nn import delta_rule as dr

B, H, DK, DV = 2, 3, 8, 5


def _inputs(length, seed=0, gated=True, initial=True):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, H, length, DK)).astype(np.float32)
  k = rng.standard_normal((B, H, length, DK)).astype(np.float32)
  k /= np.linalg.norm(k, axis=-1, keepdims=True)
  v = rng.standard_normal((B, H, length, DV)).astype(np.float32)
  beta = rng.uniform(0, 1, (B, H, length)).astype(np.float32)
  g = (-rng.uniform(0, 0.5, (B, H, length)) if gated
       else np.zeros((B, H, length))).astype(np.float32)
  s0 = rng.standard_normal((B, H, DK, DV)).astype(np.float32) if initial else None
  return q, k, v, beta, g, s0


def _numpy_loop(q, k, v, beta, g, s0, rule):
  """S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ (delta) or α_t S_{t−1} + β_t k_t v_tᵀ
  (linear), o_t = S_tᵀ q_t, in float64, one step and one matrix per head at a time."""
  state = np.zeros((B, H, DK, DV)) if s0 is None else s0.astype(np.float64)
  out = np.zeros((B, H, q.shape[2], DV))
  for b in range(B):
    for h in range(H):
      s = state[b, h].copy()
      for t in range(q.shape[2]):
        kt, vt = k[b, h, t].astype(np.float64), v[b, h, t].astype(np.float64)
        erase = np.eye(DK) - beta[b, h, t] * np.outer(kt, kt) if rule == 'delta' else np.eye(DK)
        s = np.exp(g[b, h, t]) * erase @ s + beta[b, h, t] * np.outer(kt, vt)
        out[b, h, t] = s.T @ q[b, h, t]
      state[b, h] = s
  return out, state


@pytest.mark.parametrize('rule', dr.RULES)
def test_recurrent_form_equals_the_equations(rule):
  q, k, v, beta, g, s0 = _inputs(9)
  want_o, want_s = _numpy_loop(q, k, v, beta, g, s0, rule)
  o, s = jax.jit(dr.recurrent, static_argnames='rule')(q, k, v, beta, g, s0, rule=rule)
  np.testing.assert_allclose(o, want_o, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('rule', dr.RULES)
@pytest.mark.parametrize('gated', [False, True])
@pytest.mark.parametrize('chunk', [1, 3, 16, 64])
def test_chunkwise_equals_recurrent_outputs_and_gradients(rule, gated, chunk):
  # T = 37 is no multiple of any chunk size here but 1: the last chunk is padded.
  q, k, v, beta, g, s0 = _inputs(37, seed=chunk, gated=gated)
  cotangent = np.random.default_rng(99).standard_normal((B, H, 37, DV)).astype(np.float32)
  s_cotangent = np.random.default_rng(98).standard_normal((B, H, DK, DV)).astype(np.float32)

  def loss(form, *args):
    o, s = form(*args)
    return jnp.sum(o * cotangent) + jnp.sum(s * s_cotangent)

  forms = {'recurrent': lambda *a: dr.recurrent(*a, rule=rule),
           'chunk': lambda *a: dr.chunkwise(*a[:5], chunk, a[5], rule=rule)}
  results = {}
  for name, form in forms.items():
    outputs = jax.jit(form)(q, k, v, beta, g, s0)
    grads = jax.jit(jax.grad(lambda *a, f=form: loss(f, *a), argnums=range(6)))(
        q, k, v, beta, g, s0)
    results[name] = (*outputs, *grads)
  for got, want in zip(results['chunk'], results['recurrent'], strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_chunkwise_starts_from_zero_memory_by_default():
  q, k, v, beta, g, _ = _inputs(20, initial=False)
  want_o, want_s = _numpy_loop(q, k, v, beta, g, None, 'delta')
  o, s = dr.chunkwise(q, k, v, beta, g, chunk_size=8)
  np.testing.assert_allclose(o, want_o, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s, want_s, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('form', ['recurrent', 'chunk'])
def test_zero_beta_leaves_the_memory_unchanged(form):
  q, k, v, beta, _, s0 = _inputs(12)
  zeros = np.zeros_like(beta)
  run = dr.recurrent if form == 'recurrent' else (
      lambda *a, **kw: dr.chunkwise(*a[:5], 4, a[5], **kw))
  o, s = run(q, k, v, zeros, zeros, s0, rule='delta')
  np.testing.assert_array_equal(s, s0)
  np.testing.assert_allclose(o, np.einsum('bhtk,bhkv->bhtv', q, s0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('form', ['recurrent', 'chunk'])
def test_orthonormal_keys_with_beta_one_and_no_decay_recall_exactly(form):
  # Write DK pairs under orthonormal keys into a full memory (it held other values before),
  # then read with each key: the delta rule overwrote every slot, so recall is exact.
  rng = np.random.default_rng(3)
  keys = np.linalg.qr(rng.standard_normal((DK, DK)))[0].T.astype(np.float32)  # rows orthonormal
  values = rng.standard_normal((DK, DV)).astype(np.float32)
  k = np.concatenate([keys, np.zeros_like(keys)])[None, None]              # write, then read
  v = np.concatenate([values, np.zeros_like(values)])[None, None]
  q = np.concatenate([np.zeros_like(keys), keys])[None, None]
  beta = np.concatenate([np.ones(DK), np.zeros(DK)])[None, None].astype(np.float32)
  g = np.zeros_like(beta)
  s0 = rng.standard_normal((1, 1, DK, DV)).astype(np.float32)
  run = dr.recurrent if form == 'recurrent' else (
      lambda *a, **kw: dr.chunkwise(*a[:5], 4, a[5], **kw))
  o, s = run(q, k, v, beta, g, s0, rule='delta')
  np.testing.assert_allclose(o[0, 0, DK:], values, atol=1e-5)
  np.testing.assert_allclose(s[0, 0], keys.T @ values, atol=1e-5)
  # Linear attention only adds: the old contents stay mixed in.
  o_linear, _ = run(q, k, v, beta, g, s0, rule='linear')
  assert np.abs(o_linear[0, 0, DK:] - values).max() > 0.1


def test_full_decay_forgets_everything_before_the_step():
  # α = exp(−∞) = 0: S_t = β_t k_t v_tᵀ, whatever came before (and no NaN on the way).
  q, k, v, beta, _, s0 = _inputs(6)
  g = np.full_like(beta, -np.inf)
  want = beta[..., -1, None, None] * np.einsum('bhk,bhv->bhkv', k[:, :, -1], v[:, :, -1])
  for s in (dr.chunkwise(q, k, v, beta, g, chunk_size=4, initial_state=s0)[1],
            dr.recurrent(q, k, v, beta, g, s0)[1]):
    np.testing.assert_allclose(s, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size', [1, 2, 5, 16, 37, 64])
def test_unit_lower_inverse_equals_numpy(size):
  rng = np.random.default_rng(size)
  # Entries like β k_r·k_i Γ of unit keys: |A| < 1 (unit normal entries give inverses of 1e10).
  strict = np.tril(rng.uniform(-1, 1, (3, size, size)), -1).astype(np.float32)
  got = dr.unit_lower_inverse(jnp.asarray(strict))
  want = np.linalg.inv(np.eye(size) + strict.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_unit_lower_inverse_is_exact_when_keys_repeat():
  # One key written 64 times with β = 1: every strictly-lower entry is 1. The powers of A
  # reach C(63, 31) ≈ 9e17 (a series in A loses everything in float32); the inverse is
  # I − (shifted identity), which substitution gets exactly.
  strict = np.tril(np.ones((64, 64), np.float32), -1)
  got = np.asarray(dr.unit_lower_inverse(jnp.asarray(strict)))
  np.testing.assert_array_equal(got, np.eye(64) - np.eye(64, k=-1))


def test_bad_rule_and_chunk_size_raise():
  q, k, v, beta, g, _ = _inputs(4)
  with pytest.raises(ValueError, match='update rule'):
    dr.recurrent(q, k, v, beta, g, rule='hebbian')
  with pytest.raises(ValueError, match='chunk_size'):
    dr.chunkwise(q, k, v, beta, g, chunk_size=0)
