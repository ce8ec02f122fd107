"""Product-key memory (memflax/nn/product_key.py) and the pkm_transformer model."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, read_metrics
from memflax.models import pkm_transformer
from memflax.nn import attention as attn
from memflax.nn import product_key as pk
from memflax.train import train_and_evaluate
from random_params import random_params

SMALL = dict(d_model=16, num_heads=2, num_layers=2, d_ff=32, memory_slots=64, pkm_heads=2,
             pkm_topk=4, pkm_key_dim=8, pkm_blocks=(1,))
IN, OUT = 3, 5


def _brute_top_k(s1, s2, k):
  """Top-k of all n² sums s1[i] + s2[j], formed in full: (scores, indices i·n + j)."""
  full = (s1[..., :, None] + s2[..., None, :]).reshape(*s1.shape[:-1], -1)
  best = np.argpartition(-full, k - 1, axis=-1)[..., :k]
  best = np.take_along_axis(best, np.argsort(-np.take_along_axis(full, best, -1), -1), -1)
  return np.take_along_axis(full, best, axis=-1), best


@pytest.mark.parametrize('n, k, queries', [(8, 1, 16), (8, 8, 16), (32, 5, 16), (32, 32, 16),
                                           (1024, 1, 3), (1024, 32, 3)])  # N = 2^20 last
def test_product_top_k_equals_brute_force(n, k, queries):
  top_k = jax.jit(pk.product_top_k, static_argnums=2)
  for seed in range(3):
    rng = np.random.default_rng(seed)
    s1, s2 = (rng.standard_normal((queries, n)).astype(np.float32) for _ in range(2))
    scores, indices = jax.device_get(top_k(s1, s2, k))
    want_scores, want_indices = _brute_top_k(s1, s2, k)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores)


def _memory_reference(params, x, num_heads, key_dim, k, layer_norm):
  """The layer in float64 NumPy, scoring every one of the N slots."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  q = x.astype(np.float64) @ p['query']['kernel']
  if layer_norm:
    mean, var = q.mean(-1, keepdims=True), q.var(-1, keepdims=True)
    q = (q - mean) / np.sqrt(var + 1e-6) * p['query_norm']['scale'] + p['query_norm']['bias']
  q = q.reshape(*q.shape[:-1], num_heads, 2, key_dim // 2)
  out = 0.0
  selected = []
  for h in range(num_heads):
    s1 = q[..., h, 0, :] @ p['sub_keys'][h, 0].T
    s2 = q[..., h, 1, :] @ p['sub_keys'][h, 1].T
    scores, indices = _brute_top_k(s1, s2, k)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = out + np.einsum('...k,...kv->...v', w, p['values'][indices])
    selected.append(indices)
  return out, np.stack(selected, axis=-2)


@pytest.mark.parametrize('num_slots, heads, key_dim, k, norm, value_size', [
    (64, 2, 8, 4, 'layer', 6), (256, 3, 12, 16, 'none', 5), (2**20, 2, 8, 8, 'layer', 2)])
def test_layer_equals_numpy_reference(num_slots, heads, key_dim, k, norm, value_size):
  layer = pk.ProductKeyMemory(num_slots, key_dim, heads, k, value_size=value_size,
                              query_norm=norm)
  x = np.random.default_rng(1).standard_normal((2, 3, 7)).astype(np.float32)
  params = random_params(layer, x)
  y, selection = jax.jit(lambda p, x: layer.apply({'params': p}, x, return_selection=True))(
      params, x)
  want, want_indices = _memory_reference(params, x, heads, key_dim, k, norm == 'layer')
  assert y.shape == (2, 3, value_size)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.sort(selection['indices'], -1), np.sort(want_indices, -1))


def test_value_gradient_is_zero_off_the_selected_rows():
  layer = pk.ProductKeyMemory(256, 8, num_heads=2, top_k=3, value_size=4)
  x = np.random.default_rng(2).standard_normal((2, 5, 6)).astype(np.float32)
  params = random_params(layer, x)
  cotangent = np.random.default_rng(3).standard_normal((2, 5, 4)).astype(np.float32)

  def loss(p):
    return jnp.sum(layer.apply({'params': p}, x) * cotangent)

  grad = jax.jit(jax.grad(loss))(params)['values']
  _, selection = jax.jit(lambda p: layer.apply({'params': p}, x, return_selection=True))(params)
  touched = np.flatnonzero(np.any(np.asarray(grad) != 0, axis=-1))
  np.testing.assert_array_equal(touched, np.unique(selection['indices']))
  assert 0 < len(touched) <= 2 * 5 * 2 * 3 < 256


def test_non_square_slot_counts_raise():
  assert pk.num_sub_keys(4096) == 64
  for bad in (63, 1000, 2**21, 0):
    with pytest.raises(ValueError, match='perfect square'):
      pk.num_sub_keys(bad)
  x = jnp.zeros((1, 2, 4))
  with pytest.raises(ValueError, match='num_slots must be a perfect square'):
    pk.ProductKeyMemory(63, 8, 1, 2).init(jax.random.PRNGKey(0), x)
  model = pkm_transformer.Model(output_size=OUT, **{**SMALL, 'memory_slots': 1000})
  with pytest.raises(ValueError, match='model.memory_slots must be a perfect square'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 2, IN)))


def _small_model(**overrides):
  return pkm_transformer.Model(output_size=OUT, **{**SMALL, **overrides})


def _inputs(seed=0, length=7):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((2, length, IN)), jnp.float32)


# d = 16, f = 32, D_in = 3, pkm: H = 2, d_k = 8, N = 64, d_v = d.
# embed 3·16 + 16 = 64; attention 4d² = 1024; two LayerNorms 4d = 64 per block;
# layer_0 FFN 2df + f + d = 1072 -> 2160; layer_1 memory: query d·H·d_k = 256, query norm
# 2·H·d_k = 32, sub-keys H·2·√N·d_k/2 = 128, values N·d = 1024 -> 1024 + 64 + 1440 = 2528;
# final norm 32; read-out 16·5 + 5 = 85.
@pytest.mark.parametrize('overrides, expected', [
    ({}, 64 + 2160 + 2528 + 32 + 85),                         # 4869
    ({'pkm_query_norm': 'none'}, 4869 - 32),
    ({'pkm_blocks': (0, 1)}, 4869 - 1072 + 1440),             # two memories, no FFN
])
def test_parameter_count(overrides, expected):
  shapes = jax.eval_shape(_small_model(**overrides).init, jax.random.PRNGKey(0), _inputs())
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == expected


@pytest.mark.parametrize('blocks, positions', [((0, 1), 'sinusoidal'), ((1,), 'rotary')])
def test_model_is_causal_and_decodes_like_the_full_sequence(blocks, positions, monkeypatch):
  model = _small_model(pkm_blocks=blocks, positions=positions)
  x = _inputs()
  variables = {'params': random_params(model, x, scale=0.3)}
  rotated = []
  rotary = attn.rotary_embedding
  monkeypatch.setattr(attn, 'rotary_embedding', lambda *a: rotated.append(1) or rotary(*a))
  apply = jax.jit(model.apply)
  logits, traces = apply(variables, x)
  assert traces['pkm1_indices'].shape == (2, 7, 2, 4)
  # Rotary: queries and keys of both layers' attention, the PKM block's included.
  assert len(rotated) == (4 if positions == 'rotary' else 0)
  step = 4
  changed, _ = apply(variables, x.at[:, step].add(1.0))
  np.testing.assert_allclose(changed[:, :step], logits[:, :step], rtol=0, atol=1e-6)
  assert np.all(np.abs(changed[:, step] - logits[:, step]).max(-1) > 1e-4)

  state = jax.jit(lambda: model.apply(variables, 2, 7, method='init_decode_state'))()
  decode = jax.jit(lambda s, x_t: model.apply(variables, s, x_t, method='decode_step'))
  steps = []
  for t in range(7):
    state, logits_t = decode(state, x[:, t])
    steps.append(logits_t)
  np.testing.assert_allclose(np.stack(steps, 1), logits, rtol=1e-5, atol=1e-5)


def _tiny_mqar(**overrides):
  spec = importlib.util.spec_from_file_location('cfg_pkm_mqar',
                                                REPO / 'configs' / 'pkm_transformer_mqar.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  # Each harness run compiles its train and eval steps (most of its time here): one eval
  # length and no TensorBoard images keep that to two programs.
  config.update(log_every_steps=10, eval_every_steps=10_000, **overrides)
  config.eval.lengths = (4,)
  config.log.update(tensorboard=False, progress=False)
  return config


def _leaves(state):
  return [np.asarray(a) for a in jax.tree.leaves(jax.device_get(state.params))]


@pytest.mark.slow
def test_trains_on_mqar_and_resumes_bit_exactly(tmp_path):
  # Seed 0 measured: loss 2.45 at step 10 -> ~1.45 at steps 780–800 (ratio ~0.6).
  straight = train_and_evaluate(_tiny_mqar(num_train_steps=800, checkpoint_every_steps=800),
                                tmp_path / 'straight')
  losses = [r['loss'] for r in read_metrics(tmp_path / 'straight') if 'loss' in r]
  assert np.mean(losses[-3:]) < 0.75 * losses[0], losses

  split = tmp_path / 'split'
  train_and_evaluate(_tiny_mqar(num_train_steps=400, checkpoint_every_steps=400), split)
  resumed = train_and_evaluate(_tiny_mqar(num_train_steps=800, checkpoint_every_steps=400),
                               split)
  assert int(resumed.step) == int(straight.step) == 800
  for got, want in zip(_leaves(resumed), _leaves(straight), strict=True):
    np.testing.assert_array_equal(got, want)
