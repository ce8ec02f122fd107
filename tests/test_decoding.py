"""Stepwise decoding (carry / KV cache) against the full-sequence models, and `generate`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax import generate as gen
from memflax.models import kv_memory_transformer, lstm, transformer
from memflax.nn import recurrent

TOL = dict(rtol=1e-5, atol=1e-5)
TINY_TRANSFORMER = dict(d_model=16, num_heads=2, num_layers=2, d_ff=32, max_len=32,
                        dropout_rate=0.1)  # decoding must ignore the dropout
MODELS = {
    'lstm': lambda: lstm.Model(output_size=256, hidden_size=16, num_layers=2),
    'transformer': lambda: transformer.Model(output_size=256, **TINY_TRANSFORMER),
    'transformer_learned': lambda: transformer.Model(output_size=256, positions='learned',
                                                     **TINY_TRANSFORMER),
    'transformer_rotary': lambda: transformer.Model(output_size=256, positions='rotary',
                                                    **TINY_TRANSFORMER),
    'kv_memory_transformer': lambda: kv_memory_transformer.Model(
        output_size=256, memory_slots=8, value_size=8, positions='learned', **TINY_TRANSFORMER),
}


def _tokens(seed, batch, length):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (batch, length)), jnp.int32)


def _init(model, seed=0):
  """Random params, perturbed so zero-initialised biases and unit LayerNorm scales count too."""
  params = model.init(jax.random.PRNGKey(seed), gen.one_hot_bytes(_tokens(seed, 1, 4)))['params']
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(seed + 1)
  leaves = [p + 0.1 * rng.standard_normal(p.shape).astype(np.float32) for p in leaves]
  return {'params': jax.tree.unflatten(tree, leaves)}


def _full_logits(model, variables, tokens):
  return jax.jit(model.apply)(variables, gen.one_hot_bytes(tokens))[0]


@pytest.mark.parametrize('name', sorted(MODELS))
def test_decode_steps_equal_full_sequence_logits(name):
  model = MODELS[name]()
  variables = _init(model)
  tokens = _tokens(1, 2, 11)
  full = _full_logits(model, variables, tokens)
  # A cache longer than the sequence: its empty slots must stay invisible.
  state = model.apply(variables, 2, 16, method='init_decode_state')
  step = jax.jit(lambda s, x: model.apply(variables, s, x, method='decode_step'))
  for t in range(tokens.shape[1]):
    state, logits = step(state, gen.one_hot_bytes(tokens[:, t]))
    assert logits.shape == (2, 256)
    np.testing.assert_allclose(logits, full[:, t], **TOL, err_msg=f'step {t}')


@pytest.mark.parametrize('name', sorted(MODELS))
def test_decode_step_uses_the_call_parameter_tree(name):
  """Initialising through decode_step builds exactly the tree __call__ builds."""
  model = MODELS[name]()
  x = jnp.zeros((2, 5, 256))
  by_call = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  state = model.apply({}, 2, 5, method='init_decode_state')
  by_step = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), state, x[:, 0],
                                              method='decode_step'))
  assert jax.tree.structure(by_step) == jax.tree.structure(by_call)
  assert jax.tree.leaves(by_step) == jax.tree.leaves(by_call)


@pytest.mark.parametrize('positions', ['sinusoidal', 'learned', 'rotary'])
def test_encoder_cache_takes_several_steps_at_once(positions):
  """A prompt fed as one chunk, then the rest step by step, equals the full sequence."""
  encoder = transformer.CausalEncoder(16, 2, 2, 32, max_len=16, positions=positions)
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 9, 5)), jnp.float32)
  params = encoder.init(jax.random.PRNGKey(0), x)
  full = encoder.apply(params, x)
  cache = encoder.init_cache(2, 12)
  apply = jax.jit(lambda c, x: encoder.apply(params, x, cache=c))
  h, cache = apply(cache, x[:, :6])
  parts = [h]
  for t in range(6, 9):
    h, cache = apply(cache, x[:, t:t + 1])
    parts.append(h)
  assert int(cache['index']) == 9
  np.testing.assert_allclose(jnp.concatenate(parts, axis=1), full, **TOL)


def test_decode_state_longer_than_max_len_raises():
  model = MODELS['transformer']()
  with pytest.raises(ValueError, match='max_len'):
    model.apply({}, 1, 33, method='init_decode_state')


@pytest.mark.parametrize('cell', sorted(recurrent.CELLS))
def test_stack_carry_continues_the_sequence(cell):
  stack = recurrent.RecurrentStack(cell, 6, num_layers=2)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 10, 4)), jnp.float32)
  params = stack.init(jax.random.PRNGKey(0), x)
  apply = jax.jit(stack.apply, static_argnames='return_carry')
  carry, whole = apply(params, x, return_carry=True)
  np.testing.assert_array_equal(whole, apply(params, x))  # the plain call is unchanged
  carry_a, first = apply(params, x[:, :4], return_carry=True)
  carry_b, second = apply(params, x[:, 4:], initial_carry=carry_a, return_carry=True)
  np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), whole, **TOL)
  for got, want in zip(jax.tree.leaves(carry_b), jax.tree.leaves(carry)):
    np.testing.assert_allclose(got, want, **TOL)
  assert len(carry) == 2
  if cell == 'lstm':  # (c, h): the output is h, the second entry
    np.testing.assert_array_equal(carry[-1][1], whole[:, -1])
  # Zero initial carry given explicitly is the default.
  zeros = stack.initial_carry((3,))
  np.testing.assert_array_equal(apply(params, x, initial_carry=zeros), whole)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_greedy_generation_is_argmax_of_teacher_forced_logits(name):
  model = MODELS[name]()
  variables = _init(model)
  prompt = _tokens(3, 2, 5)
  tokens = gen.generate(model, variables['params'], prompt, 7, jax.random.PRNGKey(0),
                        temperature=0.0)
  assert tokens.shape == (2, 12) and tokens.dtype == jnp.int32
  np.testing.assert_array_equal(tokens[:, :5], prompt)
  logits = _full_logits(model, variables, tokens)
  np.testing.assert_array_equal(tokens[:, 5:], jnp.argmax(logits[:, 4:-1], axis=-1))
  # top_k = 1 is greedy too, whatever the temperature.
  top1 = gen.generate(model, variables, prompt, 7, jax.random.PRNGKey(1), top_k=1)
  np.testing.assert_array_equal(top1, tokens)


def test_sampling_is_a_function_of_the_key():
  model = MODELS['transformer']()
  variables = _init(model)
  prompt = _tokens(4, 2, 3)
  draw = lambda seed: gen.generate(model, variables, prompt, 20, jax.random.PRNGKey(seed))
  a, b = draw(0), draw(0)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[:, :3], prompt)
  assert not np.array_equal(a, draw(1))


def test_top_k_samples_only_the_k_most_likely_tokens():
  model = MODELS['lstm']()
  variables = _init(model)
  tokens = gen.generate(model, variables, _tokens(5, 3, 2), 12, jax.random.PRNGKey(0),
                        temperature=2.0, top_k=3)
  logits = np.asarray(_full_logits(model, variables, tokens))[:, 1:-1]
  top3 = np.argsort(logits, axis=-1)[..., -3:]
  new = np.asarray(tokens)[:, 2:, None]
  assert np.all(np.any(top3 == new, axis=-1))
  # With only 3 tokens allowed per step, 36 draws at temperature 2 still vary.
  assert len(np.unique(new)) > 3


def test_generate_compiles_once_for_repeated_shapes():
  model = MODELS['kv_memory_transformer']()
  variables = _init(model)
  traces = []

  def input_fn(tokens):  # called only while tracing
    traces.append(1)
    return gen.one_hot_bytes(tokens)

  run = lambda seed, temperature: gen.generate(model, variables, _tokens(seed, 2, 4), 5,
                                               jax.random.PRNGKey(seed), temperature,
                                               input_fn=input_fn)
  run(0, 1.0)
  first = len(traces)
  assert first > 0
  run(1, 0.5)  # new prompt, key and temperature, same shapes
  run(2, 0.0)
  assert len(traces) == first


def test_generate_rejects_bad_arguments():
  model = MODELS['lstm']()
  variables = _init(model)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='prompt'):
    gen.generate(model, variables, jnp.zeros((2, 0), jnp.int32), 3, key)
  with pytest.raises(ValueError, match='prompt'):
    gen.generate(model, variables, jnp.zeros((4,), jnp.int32), 3, key)
  with pytest.raises(ValueError, match='top_k'):
    gen.generate(model, variables, jnp.zeros((1, 2), jnp.int32), 3, key, top_k=-1)
