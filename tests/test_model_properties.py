"""Recurrent and NTM models: bf16 inputs, no retracing, gradients against finite differences."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from memflax.models import gru, lstm, ntm, rnn
from memflax.nn import recurrent

SMALL = {
    'rnn': lambda: rnn.Model(output_size=8, hidden_size=16),
    'lstm': lambda: lstm.Model(output_size=8, hidden_size=16, num_layers=2),
    'gru': lambda: gru.Model(output_size=8, hidden_size=16, num_layers=2),
    'ntm': lambda: ntm.Model(output_size=8, controller_size=16, memory_size=12, memory_width=6,
                             num_read_heads=2, num_write_heads=2),
}
X = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=(3, 7, 9)), jnp.float32)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_bf16_inputs_stay_finite_and_shapes(name):
  model = SMALL[name]()
  params = model.init(jax.random.PRNGKey(0), X)
  logits, traces = model.apply(params, X.astype(jnp.bfloat16))
  assert logits.shape == (3, 7, 8) and bool(jnp.isfinite(logits.astype(jnp.float32)).all())
  if name == 'ntm':
    assert traces['read_weights'].shape == (3, 7, 2, 12)
    assert traces['write_weights'].shape == (3, 7, 2, 12)
    np.testing.assert_allclose(traces['read_weights'].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_jit_does_not_retrace(name):
  model = SMALL[name]()
  params = model.init(jax.random.PRNGKey(0), X)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(p, x):
    return model.apply(p, x)[0]

  chex.clear_trace_counter()  # the counter is keyed by code location, shared by parameters
  forward(params, X)
  forward(params, X + 1.0)  # same shapes, new values: no second trace


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_cell_gradients_match_finite_differences(cell):
  module = recurrent.CELLS[cell](5)
  carry = module.initial_carry((2,))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4)), jnp.float32)
  params = module.init(jax.random.PRNGKey(0), carry, x)

  def f(p, x):
    return module.apply(p, carry, x)[1]

  check_grads(f, (params, x), order=1, modes=['rev'], eps=1e-3, atol=1e-2, rtol=1e-2)


def test_ntm_gradients_match_finite_differences():
  model = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4)
  x = X[:1, :4]
  params = model.init(jax.random.PRNGKey(0), x)
  check_grads(lambda p: model.apply(p, x)[0], (params,), order=1, modes=['rev'], eps=1e-3,
              atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize('init', ['constant', 'learned', 'random'])
def test_memory_init_options(init):
  model = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4,
                    memory_init=init)
  params = model.init(jax.random.PRNGKey(0), X)['params']
  has_param = 'memory_init' in params
  assert has_param == (init != 'constant')
  grads = jax.grad(lambda p: model.apply({'params': p}, X)[0].sum())(params)
  if init == 'learned':
    assert float(jnp.abs(grads['memory_init']).sum()) > 0
  if init == 'random':  # fixed noise, as pytorch-ntm: never trained
    assert float(jnp.abs(grads['memory_init']).sum()) == 0
