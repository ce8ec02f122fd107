"""Recurrent cells against the published equations in numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.nn import recurrent
from numpy_reference import lstm_step, sigmoid, torch_gru_step

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


def _np_cho_gru_step(p, h, x):
  """Cho et al. 2014 GRU in the cell's own parameter layout (the default variant)."""
  xz, xr, xh = np.split(x @ p['x']['kernel'] + p['x']['bias'], 3, -1)
  hz, hr = np.split(h @ p['h_zr']['kernel'], 2, -1)
  z, r = sigmoid(xz + hz), sigmoid(xr + hr)
  return (1 - z) * h + z * np.tanh(xh + (r * h) @ p['h_h']['kernel'])


def test_gru_cell_matches_equations():
  cell = recurrent.GRUCell(5)
  x, h = RNG.normal(size=(2, 3)).astype(np.float32), RNG.normal(size=(2, 5)).astype(np.float32)
  p = jax.tree.map(np.asarray, _init(cell, h, x))
  # The default parameter tree is the one existing checkpoints hold: no b_hn.
  assert 'bias' not in p['h_h'] and sorted(p) == ['h_h', 'h_zr', 'x']
  p['x']['bias'] = RNG.normal(size=15).astype(np.float32)
  h_new, _ = cell.apply({'params': p}, h, x)
  np.testing.assert_allclose(h_new, _np_cho_gru_step(p, h, x), rtol=1e-5, atol=1e-6)
  # z = 1 takes the candidate: with U = 0 and a large z bias, h_new = tanh(W_h x + b_h).
  q = jax.tree.map(np.zeros_like, p)
  q['x']['kernel'] = p['x']['kernel']
  q['x']['bias'][:5] = 30.0
  h_new, _ = cell.apply({'params': q}, h, x)
  np.testing.assert_allclose(h_new, np.tanh(x @ p['x']['kernel'][:, 10:]), rtol=1e-5, atol=1e-6)


def _torch_gru_weights(seed, d, hidden):
  """Random torch.nn.GRUCell parameters (rows r, z, n), uniform(±1/√H) as torch draws them."""
  rng = np.random.default_rng(seed)
  u = lambda *shape: rng.uniform(-1, 1, size=shape).astype(np.float32) / np.sqrt(hidden)
  return dict(weight_ih=u(3 * hidden, d), weight_hh=u(3 * hidden, hidden),
              bias_ih=u(3 * hidden), bias_hh=u(3 * hidden))


def _from_torch_gru(t):
  """torch's GRUCell parameters as GRUCell(reset_after=True) params (the docstring's recipe)."""
  (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = (np.split(t[n], 3) for n in ('weight_ih', 'weight_hh'))
  (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = (np.split(t[n], 3) for n in ('bias_ih', 'bias_hh'))
  return {'x': {'kernel': np.concatenate([w_iz, w_ir, w_in]).T,
                'bias': np.concatenate([b_iz + b_hz, b_ir + b_hr, b_in])},
          'h_zr': {'kernel': np.concatenate([w_hz, w_hr]).T},
          'h_h': {'kernel': w_hn.T, 'bias': b_hn}}


def test_reset_after_gru_matches_torch_gru_cell_equations():
  d, hidden, batch, steps = 4, 6, 3, 5
  cell = recurrent.GRUCell(hidden, reset_after=True)
  x = RNG.normal(size=(steps, batch, d)).astype(np.float32)
  h0 = RNG.normal(size=(batch, hidden)).astype(np.float32)
  init = jax.tree.map(np.shape, _init(cell, h0, x[0]))
  torch_params = _torch_gru_weights(7, d, hidden)
  params = _from_torch_gru(torch_params)
  assert jax.tree.map(np.shape, params) == init  # the recipe fills every param, and only those
  step = jax.jit(lambda h, x: cell.apply({'params': params}, h, x))
  t64 = {n: a.astype(np.float64) for n, a in torch_params.items()}
  h, h_ref = jnp.asarray(h0), h0.astype(np.float64)
  for t in range(steps):  # several steps, so errors in how h is carried would show
    h, out = step(h, x[t])
    h_ref = torch_gru_step(x[t].astype(np.float64), h_ref, **t64)
    np.testing.assert_allclose(h, h_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out, h)
  # It is a different function from the default (Cho) variant on the same weights.
  cho = {n: {k: v for k, v in params[n].items() if (n, k) != ('h_h', 'bias')} for n in params}
  assert not np.allclose(recurrent.GRUCell(hidden).apply({'params': cho}, h0, x[0])[0],
                         step(h0, x[0])[0], atol=1e-3)


def test_reset_after_gru_equals_flax_linen_gru_cell():
  d, hidden, batch = 4, 6, 3
  x = RNG.normal(size=(batch, d)).astype(np.float32)
  h = RNG.normal(size=(batch, hidden)).astype(np.float32)
  torch_params = _torch_gru_weights(8, d, hidden)
  ours = recurrent.GRUCell(hidden, reset_after=True).apply(
      {'params': _from_torch_gru(torch_params)}, h, x)[0]
  (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = (np.split(torch_params[n], 3)
                                            for n in ('weight_ih', 'weight_hh'))
  (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = (np.split(torch_params[n], 3)
                                            for n in ('bias_ih', 'bias_hh'))
  flax_params = {'ir': {'kernel': w_ir.T, 'bias': b_ir + b_hr},
                 'iz': {'kernel': w_iz.T, 'bias': b_iz + b_hz},
                 'in': {'kernel': w_in.T, 'bias': b_in},
                 'hr': {'kernel': w_hr.T}, 'hz': {'kernel': w_hz.T},
                 'hn': {'kernel': w_hn.T, 'bias': b_hn}}
  theirs = nn.GRUCell(hidden).apply({'params': flax_params}, h, x)[0]
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


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


def _np_cell_step(cell, p, carry, x):
  """One step of each cell's published equations in numpy; LSTM carry as the cell's (c, h)."""
  if cell == 'rnn':
    h = np.tanh(x @ p['xh']['kernel'] + p['xh']['bias'] + carry @ p['hh']['kernel'])
    return h, h
  if cell == 'gru':
    h = _np_cho_gru_step(p, carry, x)
    return h, h
  c, h = carry
  h, c = lstm_step(x, h, c, p['gates']['kernel'], p['gates']['bias'])  # torch order (h, c)
  return (c, h), h


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_stack_from_a_given_carry_in_two_halves_equals_numpy_whole(cell):
  """A nonzero initial carry enters every layer, in the documented order ((c, h) for LSTM);
  running the sequence in two halves, the first's final carry starting the second,
  equals one numpy run over the whole sequence."""
  batch, steps, d, hidden, layers = 2, 8, 3, 5, 2
  stack = recurrent.RecurrentStack(cell, hidden, num_layers=layers)
  x = RNG.normal(size=(batch, steps, d)).astype(np.float32)
  params = jax.tree.map(np.asarray, stack.init(jax.random.PRNGKey(3), x)['params'])
  zeros = stack.initial_carry((batch,))
  carry0 = jax.tree.map(lambda z: RNG.normal(size=z.shape).astype(np.float32), zeros)
  apply = jax.jit(lambda x, c: stack.apply({'params': params}, x, initial_carry=c,
                                           return_carry=True))
  carry_a, first = apply(x[:, :steps // 2], carry0)
  carry_b, second = apply(x[:, steps // 2:], carry_a)
  # numpy, layer by layer over the whole sequence from carry0 (float64).
  p64 = jax.tree.map(lambda a: a.astype(np.float64), params)
  layer_in, final = x.astype(np.float64), []
  for layer in range(layers):
    carry = jax.tree.map(lambda a: np.asarray(a, np.float64), carry0[layer])
    ys = []
    for t in range(steps):
      carry, y = _np_cell_step(cell, p64[f'layer_{layer}'], carry, layer_in[:, t])
      ys.append(y)
    layer_in = np.stack(ys, axis=1)
    final.append(carry)
  np.testing.assert_allclose(np.concatenate([first, second], axis=1), layer_in,
                             rtol=1e-6, atol=1e-6)
  for got, want in zip(jax.tree.leaves(carry_b), jax.tree.leaves(tuple(final))):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # No carry given is the zero carry, and the plain call returns the same outputs
  # (to rounding: jit fuses differently when the zero carry is a constant).
  plain = stack.apply({'params': params}, x)
  np.testing.assert_allclose(plain, apply(x, zeros)[1], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(
      plain, stack.apply({'params': params}, x, initial_carry=None, return_carry=True)[1])


def test_gru_model_field_selects_the_torch_variant_in_every_layer():
  from memflax.models.gru import Model
  x = RNG.normal(size=(2, 5, 4)).astype(np.float32)
  model = Model(output_size=3, hidden_size=6, num_layers=2, reset_after=True)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  # Only the torch variant has b_hn (h_h/bias); every layer must have it.
  assert all('bias' in params['gru'][f'layer_{i}']['h_h'] for i in range(2))
  stack = recurrent.RecurrentStack('gru', 6, num_layers=2, gru_reset_after=True)
  expected = stack.apply({'params': params['gru']}, x)
  np.testing.assert_allclose(model.apply({'params': params}, x)[0],
                             nn.Dense(3).apply({'params': params['readout']}, expected),
                             rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='gru_reset_after applies to the gru cell'):
    recurrent.RecurrentStack('lstm', 6, gru_reset_after=True).init(jax.random.PRNGKey(0), x)
