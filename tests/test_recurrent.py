"""Recurrent cells against the published equations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.nn import recurrent
from numpy_reference import lstm_step, sigmoid

RNG = np.random.default_rng(0)


def _init(cell, carry, x):
  return cell.init(jax.random.PRNGKey(1), carry, x)['params']


def test_lstm_cell_matches_equations():
  cell = recurrent.LSTMCell(7)
  x = RNG.normal(size=(3, 5)).astype(np.float32)
  c, h = (RNG.normal(size=(3, 7)).astype(np.float32) for _ in range(2))
  params = _init(cell, (c, h), x)
  # Perturb the bias so the forget-gate offset is not the only non-zero entry.
  params['gates']['bias'] = params['gates']['bias'] + RNG.normal(size=28).astype(np.float32)
  (c_new, h_new), out = cell.apply({'params': params}, (c, h), x)
  h_ref, c_ref = lstm_step(x, h, c, np.asarray(params['gates']['kernel']),
                           np.asarray(params['gates']['bias']))
  np.testing.assert_allclose(c_new, c_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h_new, h_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out, h_new)


def test_lstm_forget_bias_starts_at_one():
  params = _init(recurrent.LSTMCell(4), recurrent.LSTMCell(4).initial_carry((1,)),
                 jnp.zeros((1, 2)))
  np.testing.assert_array_equal(params['gates']['bias'], [0] * 4 + [1] * 4 + [0] * 8)


def test_rnn_cell_matches_equation():
  cell = recurrent.RNNCell(6)
  x, h = RNG.normal(size=(2, 4)).astype(np.float32), RNG.normal(size=(2, 6)).astype(np.float32)
  p = _init(cell, h, x)
  h_new, _ = cell.apply({'params': p}, h, x)
  ref = np.tanh(x @ p['xh']['kernel'] + p['xh']['bias'] + h @ p['hh']['kernel'])
  np.testing.assert_allclose(h_new, ref, rtol=1e-5, atol=1e-6)


def test_gru_cell_matches_equations():
  cell = recurrent.GRUCell(5)
  x, h = RNG.normal(size=(2, 3)).astype(np.float32), RNG.normal(size=(2, 5)).astype(np.float32)
  p = jax.tree.map(np.asarray, _init(cell, h, x))
  h_new, _ = cell.apply({'params': p}, h, x)
  xz, xr, xh = np.split(x @ p['x']['kernel'] + p['x']['bias'], 3, -1)
  hz, hr = np.split(h @ p['h_zr']['kernel'], 2, -1)
  z, r = sigmoid(xz + hz), sigmoid(xr + hr)
  ref = (1 - z) * h + z * np.tanh(xh + (r * h) @ p['h_h']['kernel'])
  np.testing.assert_allclose(h_new, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_stack_equals_step_by_step(cell):
  """nn.scan over time gives the same outputs as calling the cell one step at a time."""
  stack = recurrent.RecurrentStack(cell, 6, num_layers=2)
  x = jnp.asarray(RNG.normal(size=(2, 5, 3)).astype(np.float32))
  params = stack.init(jax.random.PRNGKey(0), x)['params']
  out = stack.apply({'params': params}, x)
  assert out.shape == (2, 5, 6)
  cls = recurrent.CELLS[cell]
  layer_in = x
  for layer in range(2):
    module = cls(6)
    carry = module.initial_carry((2,))
    ys = []
    for t in range(5):
      carry, y = module.apply({'params': params[f'layer_{layer}']}, carry, layer_in[:, t])
      ys.append(y)
    layer_in = jnp.stack(ys, axis=1)
  np.testing.assert_allclose(out, layer_in, rtol=1e-5, atol=1e-6)
