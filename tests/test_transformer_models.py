"""The causal Transformer and memory-augmented Transformer models and their configs."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax import models
from memflax.models import kv_memory_transformer, transformer
from memflax.nn import attention as attn
from memflax.tasks.copy import Task
from short_training import train_copy

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'
IN, OUT = 9, 8  # copy task with 8 bits: 8 bit channels + delimiter in, 8 bits out
SMALL = dict(d_model=32, num_heads=2, num_layers=2, d_ff=64)


def _small(name, **overrides):
  if name == 'transformer':
    return transformer.Model(output_size=OUT, **SMALL, **overrides)
  return kv_memory_transformer.Model(output_size=OUT, **SMALL, memory_slots=16, value_size=16,
                                     **overrides)


def _inputs(seed=0, batch=3, length=7, dtype=np.float32):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, length, IN)), dtype)


def _jit_apply(model):
  # Eager flax dispatches op by op; one compile is cheaper than that on a busy CPU.
  return jax.jit(model.apply, static_argnames='train')


def _num_params(model, inputs):
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs))['params']
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


# Per encoder layer with width d, feed-forward f: 2 LayerNorms 4d, W_Q/W_K/W_V/W_O 4d²
# (no biases), FFN 2df + f + d. Around them: embed (IN+1)d, final norm 2d, read-out.
# Small (d=32, f=64): layer 8416; embed 320, final norm 64, read-out 32·8+8 = 264.
# Default (d=64, f=128): layer 33472; embed 640, final norm 128, read-out 520.
@pytest.mark.parametrize('model, expected', [
    (_small('transformer'), 320 + 2 * 8416 + 64 + 264),                          # 17480
    (_small('transformer', positions='learned', max_len=16), 17480 + 16 * 32),  # 17992
    (_small('kv'), 320 + 2 * 8416 + 64 + 16 * 32 + 16 * 16 + 48 * 8 + 8),      # 18376
    (transformer.Model(output_size=OUT), 67720),
    (transformer.Model(output_size=OUT, positions='learned'), 67720 + 512 * 64),  # 100488
    (kv_memory_transformer.Model(output_size=OUT), 67200 + 2 * 128 * 64 + 128 * 8 + 8),  # 84616
])
def test_parameter_count(model, expected):
  assert _num_params(model, _inputs()) == expected


@pytest.mark.parametrize('name', ['transformer', 'kv'])
def test_output_shapes_and_traces(name):
  model = _small(name)
  x = _inputs(batch=3, length=7)
  variables = model.init(jax.random.PRNGKey(0), x)
  apply = _jit_apply(model)
  logits, traces = apply(variables, x)
  assert logits.shape == (3, 7, OUT)
  if name == 'transformer':
    assert traces == {}
  else:
    assert set(traces) == {'memory_weights'}
    assert traces['memory_weights'].shape == (3, 7, 16)
    np.testing.assert_allclose(np.sum(traces['memory_weights'], -1), 1.0, rtol=1e-5)
  # Other lengths and batch sizes reuse the same params.
  assert apply(variables, _inputs(batch=1, length=12))[0].shape == (1, 12, OUT)


@pytest.mark.parametrize('name, positions', [('transformer', 'sinusoidal'), ('kv', 'learned'),
                                             ('transformer', 'rotary')])
def test_step_t_sees_only_inputs_up_to_t(name, positions):
  model = _small(name, positions=positions, max_len=16)
  x = np.asarray(_inputs(1, batch=2, length=9))
  variables = model.init(jax.random.PRNGKey(0), x)
  apply = _jit_apply(model)
  logits = np.asarray(apply(variables, x)[0])
  for s in (0, 4, 8):
    changed = x.copy()
    changed[:, s:] += 3.0
    new = np.asarray(apply(variables, changed)[0])
    np.testing.assert_allclose(new[:, :s], logits[:, :s], rtol=1e-5, atol=1e-5)
    assert not np.allclose(new[:, s], logits[:, s])


def test_rotary_positions_tell_the_order_of_earlier_steps_apart(monkeypatch):
  x = np.asarray(_inputs(2, batch=2, length=6))
  swapped = x.copy()
  swapped[:, [0, 1]] = x[:, [1, 0]]
  # One layer: with more, the causal mask alone tells step 0 (which sees only itself) apart.
  model = transformer.Model(output_size=OUT, **{**SMALL, 'num_layers': 1}, positions='rotary')
  variables = model.init(jax.random.PRNGKey(0), x)

  def change_at_last_step():
    apply = jax.jit(model.apply)
    return np.abs(np.asarray(apply(variables, x)[0] - apply(variables, swapped)[0])[:, 5]).max()

  assert change_at_last_step() > 1e-4
  # Without the rotation, causal attention is blind to the order of the steps before t.
  monkeypatch.setattr(attn, 'rotary_embedding', lambda x, positions, base=10000.0: x)
  assert change_at_last_step() < 1e-5


def test_learned_positions_reject_sequences_longer_than_max_len():
  model = _small('transformer', positions='learned', max_len=8)
  with pytest.raises(ValueError, match='max_len'):
    model.init(jax.random.PRNGKey(0), _inputs(length=9))


def test_unknown_positions_raise():
  with pytest.raises(ValueError, match='positions'):
    _small('transformer', positions='alibi').init(jax.random.PRNGKey(0), _inputs())


@pytest.mark.parametrize('name', ['transformer', 'kv'])
def test_dropout_only_when_training(name):
  model = _small(name, dropout_rate=0.2)
  x = _inputs()
  variables = model.init(jax.random.PRNGKey(0), x)
  apply = _jit_apply(model)
  eval_a = apply(variables, x)[0]
  np.testing.assert_array_equal(apply(variables, x, train=False)[0], eval_a)
  train_a = apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)})[0]
  train_b = apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)})[0]
  assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)


@pytest.mark.parametrize('name', ['transformer', 'kv'])
def test_bf16_inputs_stay_finite(name):
  model = _small(name)
  x = _inputs(dtype=jnp.bfloat16)
  logits, traces = _jit_apply(model)(model.init(jax.random.PRNGKey(0), x), x)
  assert logits.shape == (3, 7, OUT)
  assert np.all(np.isfinite(np.asarray(logits, np.float32)))
  for t in traces.values():
    assert np.all(np.isfinite(np.asarray(t, np.float32)))


def test_jit_does_not_retrace():
  model = _small('kv')
  x = _inputs()
  variables = model.init(jax.random.PRNGKey(0), x)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(variables, x):
    return model.apply(variables, x)

  chex.clear_trace_counter()
  f(variables, x)
  f(variables, x * 0.5)


@pytest.mark.parametrize('name', ['transformer', 'kv'])
def test_short_copy_training_cuts_loss(name):
  first, last = train_copy(_small(name), steps=300)
  # Seen: 0.69 -> 0.08 (transformer), 0.68 -> 0.17 (kv); the 0.5 bound leaves 2x margin.
  assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize('variant', ['', 'tiny'])
@pytest.mark.parametrize('config_name, model_name', [
    ('transformer_copy', 'transformer'),
    ('kv_memory_transformer_copy', 'kv_memory_transformer'),
])
def test_config_sets_every_model_field_and_builds(config_name, model_name, variant):
  spec = importlib.util.spec_from_file_location(config_name, CONFIGS / f'{config_name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(variant)
  assert c.model.name == model_name and model_name in models.available()
  fields = {f.name for f in dataclasses.fields(models.model_class(model_name))
            if f.name not in ('output_size', 'parent', 'name')}
  assert set(c.model.keys()) - {'name'} == fields
  assert c.task.name == 'copy'
  task = Task(c.task.num_bits, c.task.min_length, c.task.max_length)
  model = models.build(c.model, task.output_size)
  for field in fields:
    assert getattr(model, field) == c.model[field]
  batch = task.make_batch(jax.random.PRNGKey(0), 2)
  logits, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0),
                                                            batch['inputs'])[0])
  assert logits.shape == batch['targets'].shape
