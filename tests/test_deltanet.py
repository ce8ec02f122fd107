"""DeltaNet and Gated DeltaNet models (memflax/models/deltanet.py, gated_deltanet.py): the
chunkwise and recurrent forms agree inside a model, generation one token at a time equals
the full sequence, causality, parameter counts, and MQAR training that resumes bit-exactly."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, read_metrics
from memflax import generate as gen
from memflax.models import deltanet, gated_deltanet
from memflax.train import train_and_evaluate

IN, OUT = 9, 8
SMALL = dict(d_model=16, num_heads=2, num_layers=2, d_ff=32, chunk_size=4)
FAMILIES = {'deltanet': deltanet.Model, 'gated_deltanet': gated_deltanet.Model}


def _inputs(seed=0, batch=2, length=11):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, length, IN)),
                     jnp.float32)


def _perturbed(model, x, seed=0):
  """Random params, shifted so zero biases and unit norm scales are exercised too."""
  params = model.init(jax.random.PRNGKey(seed), x)['params']
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(seed + 1)
  return {'params': jax.tree.unflatten(
      tree, [p + 0.1 * rng.standard_normal(p.shape).astype(np.float32) for p in leaves])}


@pytest.mark.parametrize('family', sorted(FAMILIES))
@pytest.mark.parametrize('rule', ['delta', 'linear'])
def test_chunk_and_recurrent_modes_agree_with_gradients(family, rule):
  x = _inputs(length=11)  # 11 steps: chunks of 4 leave a padded remainder
  chunk = FAMILIES[family](output_size=OUT, update_rule=rule, **SMALL)
  recurrent = FAMILIES[family](output_size=OUT, update_rule=rule, mode='recurrent', **SMALL)
  variables = _perturbed(chunk, x)

  def loss(model, params):
    return jnp.sum(jnp.sin(model.apply({'params': params}, x)[0]))

  for_chunk = jax.jit(jax.value_and_grad(lambda p: loss(chunk, p)))(variables['params'])
  for_recurrent = jax.jit(jax.value_and_grad(lambda p: loss(recurrent, p)))(
      variables['params'])
  for got, want in zip(jax.tree.leaves(for_chunk), jax.tree.leaves(for_recurrent), strict=True):
    # float32 sums in another order: tolerance relative to the leaf's largest entry (~20).
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1, np.abs(want).max()))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_decoding_token_by_token_equals_the_full_sequence(family):
  model = FAMILIES[family](output_size=256, **SMALL)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 9)), jnp.int32)
  x = gen.one_hot_bytes(tokens)
  variables = _perturbed(model, x)
  full = jax.jit(model.apply)(variables, x)[0]
  state = model.apply(variables, 2, 9, method='init_decode_state')
  step = jax.jit(lambda s, x_t: model.apply(variables, s, x_t, method='decode_step'))
  logits = []
  for t in range(9):
    state, logits_t = step(state, x[:, t])
    logits.append(logits_t)
  np.testing.assert_allclose(np.stack(logits, 1), full, rtol=1e-4, atol=1e-5)
  # Constant memory per token: the state has the same shapes after 9 steps as at the start.
  empty = model.apply(variables, 2, 9, method='init_decode_state')
  assert jax.tree.map(jnp.shape, state) == jax.tree.map(jnp.shape, empty)
  # Greedy generation is the argmax of teacher-forced logits on its own output.
  out = gen.generate(model, variables['params'], tokens[:, :3], 5, jax.random.PRNGKey(0),
                     temperature=0.0)
  teacher = jax.jit(model.apply)(variables, gen.one_hot_bytes(out))[0]
  np.testing.assert_array_equal(out[:, 3:], jnp.argmax(teacher[:, 2:-1], -1))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_step_t_sees_only_inputs_up_to_t(family):
  model = FAMILIES[family](output_size=OUT, **SMALL)
  x = np.asarray(_inputs(1))
  variables = _perturbed(model, x)
  apply = jax.jit(model.apply)
  logits = np.asarray(apply(variables, x)[0])
  for s in (0, 5, 10):
    changed = x.copy()
    changed[:, s:] += 3.0
    new = np.asarray(apply(variables, changed)[0])
    np.testing.assert_allclose(new[:, :s], logits[:, :s], rtol=1e-5, atol=1e-5)
    assert np.abs(new[:, s] - logits[:, s]).max() > 1e-4


# Per layer, width d = 16, H = 2 heads of 8, f = 32, short conv K = 4:
#   two LayerNorms 4d = 64; qkv 3d² = 768; conv K·3d = 192; β d·H + H = 34;
#   output norm 8; out d² = 256; FFN 2df + f + d = 1072                -> 2394
#   gated: decay d·H = 32, decay_log H, decay_bias H = 36; output gate d² = 256
# Around the layers: embed 9·16 + 16 = 160, final norm 32, read-out 16·8 + 8 = 136.
@pytest.mark.parametrize('family, overrides, expected', [
    ('deltanet', {}, 160 + 2 * 2394 + 32 + 136),                                   # 5116
    ('deltanet', {'short_conv': 0, 'use_beta': False, 'output_norm': False},
     5116 - 2 * (192 + 34 + 8)),
    ('gated_deltanet', {}, 5116 + 2 * (36 + 256)),                                 # 5700
])
def test_parameter_count(family, overrides, expected):
  model = FAMILIES[family](output_size=OUT, **{**SMALL, **overrides})
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), _inputs())
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == expected


@pytest.mark.parametrize('field, value, match', [
    ('update_rule', 'hebbian', 'model.update_rule'), ('mode', 'parallel', 'model.mode'),
    ('chunk_size', 0, 'model.chunk_size'), ('short_conv', 1, 'model.short_conv'),
])
def test_bad_fields_raise_one_clear_error(field, value, match):
  model = deltanet.Model(output_size=OUT, **{**SMALL, field: value})
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), _inputs())


def _tiny_mqar(family, **overrides):
  path = REPO / 'configs' / f'{family}_mqar.py'
  spec = importlib.util.spec_from_file_location(f'cfg_{family}_mqar', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  config.update(log_every_steps=10, eval_every_steps=10_000, **overrides)
  config.eval.lengths = (4,)  # one eval shape: compiling dominates these short runs
  config.log.update(tensorboard=False, progress=False)
  return config


def _leaves(state):
  return [np.asarray(a) for a in jax.tree.leaves(jax.device_get(state.params))]


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_trains_on_mqar_and_resumes_bit_exactly(tmp_path, family):
  straight = train_and_evaluate(_tiny_mqar(family, num_train_steps=600,
                                           checkpoint_every_steps=600), tmp_path / 'straight')
  losses = [r['loss'] for r in read_metrics(tmp_path / 'straight') if 'loss' in r]
  assert np.mean(losses[-3:]) < 0.75 * losses[0], losses

  split = tmp_path / 'split'
  train_and_evaluate(_tiny_mqar(family, num_train_steps=300, checkpoint_every_steps=300), split)
  resumed = train_and_evaluate(_tiny_mqar(family, num_train_steps=600,
                                          checkpoint_every_steps=300), split)
  assert int(resumed.step) == int(straight.step) == 600
  for got, want in zip(_leaves(resumed), _leaves(straight), strict=True):
    np.testing.assert_array_equal(got, want)
