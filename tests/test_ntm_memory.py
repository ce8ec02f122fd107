"""NTM addressing, read and write against an element-by-element numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from memflax.nn import memory as mem
from numpy_reference import ntm_address, ntm_write, softmax

RNG = np.random.default_rng(42)
B, H, N, W, S = 2, 3, 10, 6, 3


def _random_head_params():
  f32 = lambda *s: RNG.normal(size=s).astype(np.float32)
  return dict(
      memory=f32(B, N, W), w_prev=softmax(f32(B, H, N)).astype(np.float32), keys=f32(B, H, W),
      beta=np.abs(f32(B, H)) * 3, gate=RNG.uniform(size=(B, H)).astype(np.float32),
      shift=softmax(f32(B, H, S)).astype(np.float32),
      gamma=(1 + np.abs(f32(B, H))).astype(np.float32))


def test_address_matches_reference():
  p = _random_head_params()
  w = mem.address(p['memory'], p['w_prev'], p['keys'], p['beta'], p['gate'], p['shift'],
                  p['gamma'])
  for b in range(B):
    for h in range(H):
      ref = ntm_address(p['memory'][b], p['w_prev'][b, h], p['keys'][b, h], p['beta'][b, h],
                        p['gate'][b, h], p['shift'][b, h], p['gamma'][b, h])
      np.testing.assert_allclose(w[b, h], ref, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)


def test_shift_moves_focus_forward_and_wraps():
  w = jax.nn.one_hot(jnp.array([[N - 1]]), N)          # focus on the last slot
  forward = jnp.array([[[0.0, 0.0, 1.0]]])             # all mass on offset +1
  np.testing.assert_array_equal(mem.circular_shift(w, forward), jax.nn.one_hot([[0]], N))


def test_sharpen_survives_large_gamma():
  w = jnp.full((1, 1, 128), 1 / 128)
  out = mem.sharpen(w.at[0, 0, 3].set(2 / 128), jnp.array([[21.0]]))
  assert np.isfinite(out).all() and abs(float(out.sum()) - 1) < 1e-6
  assert int(out.argmax()) == 3


def test_read_is_weighted_sum_of_rows():
  p = _random_head_params()
  r = mem.read(p['memory'], p['w_prev'])
  ref = np.einsum('bhn,bnw->bhw', p['w_prev'], p['memory'])
  np.testing.assert_allclose(r, ref, rtol=1e-5, atol=1e-6)


def test_single_head_write_is_erase_then_add():
  p = _random_head_params()
  erase = RNG.uniform(size=(B, 1, W)).astype(np.float32)
  add = RNG.normal(size=(B, 1, W)).astype(np.float32)
  out = mem.write(p['memory'], p['w_prev'][:, :1], erase, add)
  for b in range(B):
    ref = ntm_write(p['memory'][b], p['w_prev'][b, 0], erase[b, 0], add[b, 0])
    np.testing.assert_allclose(out[b], ref, rtol=1e-5, atol=1e-6)


def test_multi_head_write_multiplies_erasures_and_sums_adds():
  p = _random_head_params()
  erase = RNG.uniform(size=(B, H, W)).astype(np.float32)
  add = RNG.normal(size=(B, H, W)).astype(np.float32)
  out = mem.write(p['memory'], p['w_prev'], erase, add)
  for b in range(B):
    keep = np.ones((N, W))
    added = np.zeros((N, W))
    for h in range(H):
      keep *= 1 - np.outer(p['w_prev'][b, h], erase[b, h])
      added += np.outer(p['w_prev'][b, h], add[b, h])
    np.testing.assert_allclose(out[b], p['memory'][b] * keep + added, rtol=1e-5, atol=1e-6)


def test_frobenius_normalisation():
  m = RNG.normal(size=(B, N, W)).astype(np.float32) * 5
  out = mem.frobenius_normalize(m)
  for b in range(B):
    np.testing.assert_allclose(out[b], m[b] / np.linalg.norm(m[b], 'fro'), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[b], 'fro'), 1.0, rtol=1e-5)


@pytest.mark.parametrize('shape', [(2, 128, 20), (2, 8, 4)])  # the NTM default; a small one
def test_frobenius_normalisation_of_the_default_initial_memory_is_exact(shape):
  # The NTM's 'constant' M_0 is 1e-6 everywhere: ‖M‖_F = 1e-6·√(NW), 5e-5 at 128×20,
  # where M / (‖M‖ + 1e-8) gave a norm of 0.9998.
  m = np.full(shape, 1e-6, np.float32)
  m[1] += RNG.normal(size=shape[1:]).astype(np.float32) * 1e-7  # not all equal
  out = np.asarray(mem.frobenius_normalize(jnp.asarray(m)), np.float64)
  m64 = m.astype(np.float64)
  for b in range(shape[0]):
    np.testing.assert_allclose(np.linalg.norm(out[b]), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[b], m64[b] / np.linalg.norm(m64[b]), rtol=1e-6, atol=0)


def test_frobenius_normalisation_gradient_matches_the_jacobian_at_a_small_memory():
  # d(M/‖M‖) = (I − u uᵀ)/‖M‖ with u = M/‖M‖ (flattened): the vector-Jacobian product
  # of g is (g − u (u·g))/‖M‖, which ‖M‖ + ε would also have biased here.
  m = (1e-6 + 1e-7 * RNG.normal(size=(2, 8, 4))).astype(np.float32)
  g = RNG.normal(size=m.shape).astype(np.float32)
  got = jax.grad(lambda m: jnp.sum(mem.frobenius_normalize(m) * g))(jnp.asarray(m))
  for b in range(2):
    m64, g64 = m[b].astype(np.float64), g[b].astype(np.float64)
    norm = np.linalg.norm(m64)
    u = m64 / norm
    want = (g64 - u * np.sum(u * g64)) / norm
    np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_frobenius_normalisation_of_zero_memory_is_zero_with_finite_gradients():
  zero = jnp.zeros((B, N, W), jnp.float32)
  out = mem.frobenius_normalize(zero)
  np.testing.assert_array_equal(out, 0.0)
  probe = jnp.asarray(RNG.normal(size=(B, N, W)).astype(np.float32))
  grad = jax.grad(lambda m: jnp.sum(jnp.sin(mem.frobenius_normalize(m)) * probe))(zero)
  assert np.all(np.isfinite(grad))
  # One zero item must not disturb the other: item 1 stays exactly normalised.
  m = jnp.asarray(np.stack([np.zeros((N, W)), RNG.normal(size=(N, W))]).astype(np.float32))
  out = mem.frobenius_normalize(m)
  np.testing.assert_array_equal(out[0], 0.0)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out[1], np.float64)), 1.0, atol=1e-6)
  grad = jax.grad(lambda m: jnp.sum(jnp.sin(mem.frobenius_normalize(m)) * probe))(m)
  assert np.all(np.isfinite(grad))
  # bf16 memory: the norm is taken in float32, so the floor's square does not underflow.
  grad = jax.grad(lambda m: jnp.sum(mem.frobenius_normalize(m).astype(jnp.float32)))(
      zero.astype(jnp.bfloat16))
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_addressing_gradients_match_finite_differences():
  p = _random_head_params()

  def f(memory, keys, beta, gate, shift_logits, gamma):
    return mem.address(memory, p['w_prev'], keys, beta, gate, jax.nn.softmax(shift_logits),
                       gamma)

  args = (p['memory'], p['keys'], p['beta'], p['gate'], np.log(p['shift']), p['gamma'])
  check_grads(f, args, order=1, modes=['rev'], eps=1e-3, atol=2e-2, rtol=2e-2)


def test_write_gradients_match_finite_differences():
  p = _random_head_params()
  erase = RNG.uniform(size=(B, H, W)).astype(np.float32)
  add = RNG.normal(size=(B, H, W)).astype(np.float32)
  check_grads(lambda m, w, e, a: mem.frobenius_normalize(mem.write(m, w, e, a)),
              (p['memory'], p['w_prev'], erase, add), order=1, modes=['rev'], eps=1e-3,
              atol=2e-2, rtol=2e-2)


def test_one_head_write_gradient_equals_autodiff_of_the_equation():
  # The single-head write has a hand-written VJP (speed); it must equal autodiff of
  # M ∘ (1 − w eᵀ) + w aᵀ for every input, under a loss that weighs each cell differently.
  p = _random_head_params()
  erase = RNG.uniform(size=(B, 1, W)).astype(np.float32)
  add = RNG.normal(size=(B, 1, W)).astype(np.float32)
  probe = RNG.normal(size=(B, N, W)).astype(np.float32)

  def plain(m, w, e, a):
    out = m * (1.0 - w[:, 0, :, None] * e[:, 0, None, :]) + w[:, 0, :, None] * a[:, 0, None, :]
    return jnp.sum(jnp.sin(out) * probe)

  def ours(m, w, e, a):
    return jnp.sum(jnp.sin(mem.write(m, w, e, a)) * probe)

  args = (p['memory'], p['w_prev'][:, :1], erase, add)
  np.testing.assert_allclose(ours(*args), plain(*args), rtol=1e-6)
  for got, want in zip(jax.grad(ours, argnums=(0, 1, 2, 3))(*args),
                       jax.grad(plain, argnums=(0, 1, 2, 3))(*args)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_heads_respect_ranges():
  heads = mem.NTMHeads(num_heads=2, width=W, writes=True)
  h = jnp.asarray(RNG.normal(size=(B, 16)).astype(np.float32)) * 100
  params = heads.init(jax.random.PRNGKey(0), h)
  out = heads.apply(params, h)
  assert out['keys'].shape == (B, 2, W) and out['shift'].shape == (B, 2, 3)
  assert (out['beta'] >= 0).all() and (out['gamma'] >= 1).all()
  assert ((out['gate'] >= 0) & (out['gate'] <= 1)).all()
  assert ((out['erase'] >= 0) & (out['erase'] <= 1)).all() and (abs(out['add']) <= 1).all()
  np.testing.assert_allclose(out['shift'].sum(-1), 1.0, rtol=1e-6)
  assert (abs(out['keys']) <= 20).all()  # controller outputs clipped to ±20


def test_zero_memory_row_has_finite_gradients():
  memory = jnp.zeros((1, 4, 3)).at[0, 1].set(1.0)   # rows 0, 2, 3 exactly zero
  keys = jnp.ones((1, 1, 3))
  grads = jax.grad(lambda m, k: mem.content_weighting(m, k, jnp.ones((1, 1)))[0, 0, 1],
                   argnums=(0, 1))(memory, keys)
  assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('heads', [1, H])
def test_slots_last_layout_gives_the_same_numbers_and_gradients(heads):
  """Memory stored [B,W,N] (slots_last, the NTM's carry) against the [B,N,W] functions
  that the numpy reference checks above: values and every input's gradient."""
  p = _random_head_params()
  erase = RNG.uniform(size=(B, heads, W)).astype(np.float32)
  add = RNG.normal(size=(B, heads, W)).astype(np.float32)
  probe = RNG.normal(size=(B, N, W)).astype(np.float32)

  def step(memory, keys, w_prev, erase, add, slots_last):
    w = mem.address(memory, w_prev, keys, p['beta'], p['gate'], p['shift'], p['gamma'],
                    slots_last)
    reads = mem.read(memory, w, slots_last)
    out = mem.frobenius_normalize(mem.write(memory, w[:, :heads], erase, add, slots_last))
    if slots_last:
      out = out.swapaxes(1, 2)
    return jnp.sum(jnp.sin(out) * probe) + jnp.sum(jnp.cos(reads)) + jnp.sum(w * w)

  rows = (p['memory'], p['keys'], p['w_prev'], erase, add)
  cols = (p['memory'].swapaxes(1, 2), *rows[1:])
  np.testing.assert_allclose(step(*cols, True), step(*rows, False), rtol=1e-6)
  got = jax.grad(step, argnums=(0, 1, 2, 3, 4))(*cols, True)
  want = jax.grad(step, argnums=(0, 1, 2, 3, 4))(*rows, False)
  np.testing.assert_allclose(got[0], want[0].swapaxes(1, 2), rtol=1e-5, atol=1e-6)
  for g, w in zip(got[1:], want[1:]):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
