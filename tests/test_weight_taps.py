"""Weight taps (memflax/nn/weight_taps.py) give the gradients plain autodiff gives
(the NTM's use of them: tests/test_ntm_gradients.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.nn import weight_taps

RNG = np.random.default_rng(0)


def _recurrence(kernel, xs, h0, tapped):
  """h_t = tanh([x_t, h_{t-1}] @ kernel), xs [B,T,D], h0 [B,H] -> sum of squares of all h."""
  batch, steps, _ = xs.shape
  taps = weight_taps.weight_taps(kernel, (steps, batch, kernel.shape[0]),
                                 (steps, batch, kernel.shape[1])) if tapped else None

  def step(h, inputs):
    x, tap = inputs
    joint = jnp.concatenate([x, h], axis=-1)
    pre = weight_taps.tapped_matmul(joint, kernel, *tap) if tapped else joint @ kernel
    h = jnp.tanh(pre)
    return h, h

  _, hs = jax.lax.scan(step, h0, (xs.swapaxes(0, 1), taps))
  return jnp.sum(hs ** 2) + jnp.sum(hs[-1] * jnp.arange(hs.shape[-1]))


def test_taps_give_the_kernel_gradient_of_a_recurrence():
  kernel = jnp.asarray(RNG.normal(size=(5 + 4, 4)).astype(np.float32)) * 0.5
  xs = jnp.asarray(RNG.normal(size=(3, 7, 5)).astype(np.float32))
  h0 = jnp.asarray(RNG.normal(size=(3, 4)).astype(np.float32))
  plain = jax.grad(_recurrence, argnums=(0, 1, 2))(kernel, xs, h0, False)
  tapped = jax.grad(_recurrence, argnums=(0, 1, 2))(kernel, xs, h0, True)
  assert float(jnp.abs(plain[0]).max()) > 1e-2  # a gradient worth comparing
  for got, want in zip(tapped, plain):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(_recurrence(kernel, xs, h0, True),
                             _recurrence(kernel, xs, h0, False), rtol=1e-6)


def test_taps_are_zeros_and_the_matmul_is_a_matmul():
  kernel = jnp.ones((3, 2))
  x_tap, y_tap = weight_taps.weight_taps(kernel, (4, 3), (4, 2))
  assert x_tap.shape == (4, 3) and y_tap.shape == (4, 2)
  assert not x_tap.any() and not y_tap.any()
  x = jnp.asarray(RNG.normal(size=(4, 3)).astype(np.float32))
  np.testing.assert_allclose(weight_taps.tapped_matmul(x, kernel, x_tap, y_tap), x @ kernel,
                             rtol=1e-6)
