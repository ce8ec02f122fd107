"""kNN memory (memflax/nn/knn_memory.py) and the knn_transformer model."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.models import knn_transformer
from memflax.nn import knn_memory as km
from random_params import random_params

B, H, DH, N, T, K = 2, 2, 4, 16, 8, 4
D = H * DH
SMALL = dict(d_model=8, num_heads=2, num_layers=2, d_ff=16, memory_size=N, top_k=K)
IN, OUT = 3, 5


def _store(count, seed=1):
  """A pre-filled store {'keys', 'values' [B, H, N, DH], 'count' [B]} (random content)."""
  rng = np.random.default_rng(seed)
  return {'keys': rng.standard_normal((B, H, N, DH)).astype(np.float32),
          'values': rng.standard_normal((B, H, N, DH)).astype(np.float32),
          'count': np.asarray(count, np.int32)}


def _empty_store():
  return _store([0] * B) | {'keys': np.zeros((B, H, N, DH), np.float32),
                            'values': np.zeros((B, H, N, DH), np.float32)}


# --- NumPy references ------------------------------------------------------------------


def _np_append(keys, values, count, new_keys, new_values):
  """Write t of row b goes to slot (count_b + t) mod N, one write at a time."""
  keys, values = keys.copy(), values.copy()
  slots = keys.shape[2]
  for b in range(keys.shape[0]):
    for t in range(new_keys.shape[2]):
      keys[b, :, (count[b] + t) % slots] = new_keys[b, :, t]
      values[b, :, (count[b] + t) % slots] = new_values[b, :, t]
  return keys, values, np.asarray(count) + new_keys.shape[2]


def _np_top_k(q, keys, n_valid, k):
  """Slots of the top-k of q·keys[j] over j < n_valid, best first (fewer if n_valid < k)."""
  scores = keys[:n_valid] @ q
  return np.argsort(-scores, kind='stable')[:k], scores


def _softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


def _np_layer(params, x, store, reset=None, heads=H, top_k=K, normalize=True):
  """The whole KNNMemoryAttention layer in float64 NumPy, one query at a time.
  Returns (y [B, T, D], the store after appending this segment)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(x, np.float64)
  batch, length, _ = x.shape
  dh = p['query']['kernel'].shape[1] // heads

  def project(name):
    return (x @ p[name]['kernel']).reshape(batch, length, heads, dh).transpose(0, 2, 1, 3)

  q, k, v = project('query'), project('key'), project('value')
  if normalize:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
  tau = (np.sqrt(dh) if normalize else 1 / np.sqrt(dh)) * np.exp(p['log_scale'])
  gate = 1 / (1 + np.exp(-p['gate']))
  count = np.asarray(store['count'])
  if reset is not None:
    count = np.where(reset, 0, count)
  slots = store['keys'].shape[2]
  mem_k, mem_v = (np.asarray(store[n], np.float64) for n in ('keys', 'values'))
  out = np.zeros((batch, heads, length, dh))
  for b in range(batch):
    for h in range(heads):
      for t in range(length):
        local = _softmax(tau[h] * (k[b, h, :t + 1] @ q[b, h, t])) @ v[b, h, :t + 1]
        chosen, scores = _np_top_k(q[b, h, t], mem_k[b, h], min(count[b], slots), top_k)
        memory = (_softmax(tau[h] * scores[chosen]) @ mem_v[b, h, chosen] if len(chosen)
                  else np.zeros(dh))
        out[b, h, t] = gate[h] * memory + (1 - gate[h]) * local
  y = out.transpose(0, 2, 1, 3).reshape(batch, length, heads * dh) @ p['out']['kernel']
  keys, values, count = _np_append(mem_k, mem_v, count, k, v)
  return y, {'keys': keys, 'values': values, 'count': count}


# --- pure functions --------------------------------------------------------------------


def test_retrieve_equals_brute_force_top_k():
  rng = np.random.default_rng(0)
  counts = np.array([0, 3, 10, 37], np.int32)  # empty, fewer than k, partial, wrapped
  batch = len(counts)
  q = rng.standard_normal((batch, H, T, DH)).astype(np.float32)
  keys = rng.standard_normal((batch, H, N, DH)).astype(np.float32)
  # Each value names its slot, so the retrieved values say which slots were chosen.
  values = np.broadcast_to(np.arange(N, dtype=np.float32)[:, None], (batch, H, N, DH)).copy()
  retrieve = jax.jit(km.retrieve, static_argnums=(4, 5))
  got_k, got_v, scores, valid = jax.device_get(retrieve(q, keys, values, counts, K, False))
  assert got_k.shape == got_v.shape == (batch, H, T, K, DH)
  assert scores.shape == valid.shape == (batch, H, T, K) and valid.dtype == bool
  for b in range(batch):
    n_valid = min(counts[b], N)
    for h in range(H):
      for t in range(T):
        want, all_scores = _np_top_k(q[b, h, t].astype(np.float64), keys[b, h], n_valid, K)
        m = len(want)
        np.testing.assert_array_equal(valid[b, h, t], np.arange(K) < m)
        np.testing.assert_array_equal(got_v[b, h, t, :m, 0], want)
        np.testing.assert_array_equal(got_k[b, h, t, :m], keys[b, h, want])
        np.testing.assert_allclose(scores[b, h, t, :m], all_scores[want], rtol=1e-5, atol=1e-6)
        assert np.all(scores[b, h, t, m:] == -np.inf)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='exactness is the CPU fallback')
@pytest.mark.parametrize('recall_target', [0.95, 1.0])
def test_approximate_retrieve_is_exact_on_cpu(recall_target):
  # jax/_src/lax/ann.py: approx_max_k is only optimised on TPU; other backends fall
  # back to sort and slice, so on CPU it returns the exact top-k at any recall_target.
  rng = np.random.default_rng(1)
  counts = np.array([3, 37], np.int32)
  q = rng.standard_normal((B, H, T, DH)).astype(np.float32)
  keys, values = (rng.standard_normal((B, H, N, DH)).astype(np.float32) for _ in range(2))
  exact = km.retrieve(q, keys, values, counts, K)
  approx = km.retrieve(q, keys, values, counts, K, approximate=True,
                       recall_target=recall_target)
  np.testing.assert_array_equal(approx[3], exact[3])
  valid = np.asarray(exact[3])
  for got, want in zip(approx[:3], exact[:3]):
    np.testing.assert_array_equal(np.asarray(got)[valid], np.asarray(want)[valid])


def test_append_is_a_ring_buffer():
  rng = np.random.default_rng(2)
  keys = np.zeros((B, H, N, DH), np.float32)
  values = np.zeros((B, H, N, DH), np.float32)
  count = np.array([0, 11], np.int32)
  want = (keys, values, count)
  got = (jnp.asarray(keys), jnp.asarray(values), jnp.asarray(count))
  # T = 5 does not divide N = 16 (wraps mid-segment); T = 20 > N keeps only the last
  # N writes of the segment; T = N overwrites every slot exactly once.
  for length in (5, 5, 5, 20, 3, 16, 5):
    new_k, new_v = (rng.standard_normal((B, H, length, DH)).astype(np.float32)
                    for _ in range(2))
    got = km.append(*got, new_k, new_v)
    want = _np_append(*want, new_k, new_v)
    for g, w in zip(got, want):
      np.testing.assert_array_equal(np.asarray(g), w)
  assert list(np.asarray(got[2])) == [59, 70]


def test_memory_attention_without_valid_pairs_reads_zero():
  rng = np.random.default_rng(3)
  q = rng.standard_normal((1, 1, 2, DH)).astype(np.float32)
  keys, values = (rng.standard_normal((1, 1, 2, K, DH)).astype(np.float32) for _ in range(2))
  valid = np.array([[[[False] * K, [True, True, False, False]]]])
  out = np.asarray(km.memory_attention(q, keys, values, valid, 0.7))
  np.testing.assert_array_equal(out[0, 0, 0], np.zeros(DH))
  w = _softmax(0.7 * (keys[0, 0, 1, :2].astype(np.float64) @ q[0, 0, 1]))
  np.testing.assert_allclose(out[0, 0, 1], w @ values[0, 0, 1, :2], rtol=1e-5, atol=1e-6)


# --- the layer -------------------------------------------------------------------------


def _layer(**overrides):
  fields = dict(num_heads=H, head_dim=None, memory_size=N, top_k=K) | overrides
  return km.KNNMemoryAttention(**fields)


def _x(seed=4):
  return np.random.default_rng(seed).standard_normal((B, T, D)).astype(np.float32)


@functools.cache
def _apply(**fields):
  """Jitted apply of _layer(**fields) that returns (y, {'memory', 'intermediates'})."""
  layer = _layer(**fields)
  return jax.jit(functools.partial(layer.apply, mutable=['memory', 'intermediates']))


@pytest.mark.parametrize('normalize', [True, False])
def test_layer_equals_numpy_reference(normalize):
  layer = _layer(normalize_keys=normalize)
  x = _x()
  params = random_params(layer, x)
  store = _store([5, 37])  # row 0 partly filled, row 1 wrapped around
  reset = np.array([False, True])
  y, state = _apply(normalize_keys=normalize)({'params': params, 'memory': store}, x, reset)
  want, want_store = _np_layer(params, x, store, reset, normalize=normalize)
  assert y.shape == (B, T, D)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
  # Written after retrieval: count advanced by T from the (reset) count.
  np.testing.assert_array_equal(state['memory']['count'], [5 + T, T])
  for name in ('keys', 'values'):
    np.testing.assert_allclose(state['memory'][name], want_store[name], rtol=1e-5, atol=1e-6)
  stats = state['intermediates']
  np.testing.assert_allclose(stats['gate'][0], 1 / (1 + np.exp(-params['gate'])), rtol=1e-6)
  np.testing.assert_allclose(stats['occupancy'][0], (5 / N + 0) / 2, rtol=1e-6)
  assert stats['hit_score'][0].shape == (H,)


def test_two_segments_use_the_memory():
  layer = _layer()
  first, second = _x(5), _x(6)
  params = random_params(layer, first, seed=1)
  apply = _apply()
  no_reset = np.zeros(B, bool)
  _, state = apply({'params': params, 'memory': _empty_store()}, first, no_reset)
  carried = state['memory']
  np.testing.assert_array_equal(carried['count'], [T, T])
  y, _ = apply({'params': params, 'memory': carried}, second, no_reset)
  y_empty, _ = apply({'params': params, 'memory': _empty_store()}, second, no_reset)
  assert np.abs(np.asarray(y) - np.asarray(y_empty)).max() > 1e-3
  _, want_store = _np_layer(params, first, _empty_store())
  want, _ = _np_layer(params, second, want_store)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
  # A reset row reads nothing from the carried store: as if the store were empty.
  y_reset, _ = apply({'params': params, 'memory': carried}, second, np.array([True, False]))
  np.testing.assert_allclose(y_reset[0], y_empty[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y_reset[1], y[1], rtol=1e-6, atol=1e-6)


def test_store_changes_only_when_mutable():
  layer = _layer()
  x = _x()
  variables = {'params': random_params(layer, x), 'memory': _store([5, 37])}
  y_read = layer.apply(variables, x)  # no mutable collections: output only
  y_intermediates, state = layer.apply(variables, x, mutable=['intermediates'])
  assert 'memory' not in state
  y_write, state = layer.apply(variables, x, mutable=['memory'])
  np.testing.assert_array_equal(y_read, y_write)
  np.testing.assert_array_equal(y_read, y_intermediates)
  np.testing.assert_array_equal(state['memory']['count'], [5 + T, 37 + T])
  # init leaves the store at zeros (the trainer rebuilds it from shapes as zeros).
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x)['memory']
  assert {n: (s.shape, s.dtype) for n, s in shapes.items()} == {
      'keys': ((B, H, N, DH), jnp.float32), 'values': ((B, H, N, DH), jnp.float32),
      'count': ((B,), jnp.int32)}
  initial = layer.init(jax.random.PRNGKey(0), x)['memory']
  assert all(not np.any(np.asarray(a)) for a in jax.tree.leaves(initial))
  # Without any store (a caller that passes params only) the layer reads an empty one.
  np.testing.assert_array_equal(layer.apply({'params': variables['params']}, x),
                                layer.apply(variables | {'memory': initial}, x))


def test_gradients_reach_gate_and_projections_but_not_the_store():
  layer = _layer()
  x = _x()
  params = random_params(layer, x)
  store = _store([5, 37])
  cotangent = np.random.default_rng(7).standard_normal((B, T, D)).astype(np.float32)

  def loss(params, keys, values):
    memory = {'keys': keys, 'values': values, 'count': store['count']}
    return jnp.sum(layer.apply({'params': params, 'memory': memory}, x) * cotangent)

  g_params, g_keys, g_values = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
      params, store['keys'], store['values'])
  for name in ('gate', 'log_scale'):
    assert np.all(np.asarray(g_params[name]) != 0), name
  for name in ('query', 'key', 'value', 'out'):
    assert np.abs(np.asarray(g_params[name]['kernel'])).max() > 0, name
  assert not np.any(np.asarray(g_keys)) and not np.any(np.asarray(g_values))


def test_memory_size_zero_is_the_closed_gate():
  x = _x()
  with_memory = _layer()
  without = _layer(memory_size=0)
  params = random_params(with_memory, x)
  shapes = jax.eval_shape(without.init, jax.random.PRNGKey(0), x)
  assert set(shapes) == {'params'}  # no 'memory' collection at all
  assert jax.tree.map(lambda s: s.shape, shapes['params']) == jax.tree.map(np.shape, params)
  closed = params | {'gate': np.full((H,), -1e4, np.float32)}  # sigmoid(-1e4) == 0.0
  y_closed, state = _apply()({'params': closed, 'memory': _store([5, 37])}, x,
                             np.zeros(B, bool))
  np.testing.assert_array_equal(state['intermediates']['gate'][0], [0.0, 0.0])
  # The gate stays in [0, 1] however large the bias.
  _, state = _apply()({'params': params | {'gate': np.array([-1e4, 1e4], np.float32)},
                       'memory': _store([5, 37])}, x, np.zeros(B, bool))
  np.testing.assert_array_equal(state['intermediates']['gate'][0], [0.0, 1.0])
  y_none = without.apply({'params': params}, x)
  np.testing.assert_allclose(y_none, y_closed, rtol=1e-6, atol=1e-6)


def test_approximate_layer_matches_exact_on_cpu():
  if jax.default_backend() != 'cpu':
    pytest.skip('exactness is the CPU fallback')
  x = _x()
  layer = _layer(approximate=True)
  params = random_params(layer, x)
  variables = {'params': params, 'memory': _store([5, 37])}
  y_approx = layer.apply(variables, x)
  y_exact = _layer().apply(variables, x)
  np.testing.assert_allclose(y_approx, y_exact, rtol=1e-6, atol=1e-6)


# --- the model -------------------------------------------------------------------------


def _model(**overrides):
  return knn_transformer.Model(output_size=OUT, **SMALL | overrides)


def _inputs(seed=0):
  return np.random.default_rng(seed).standard_normal((B, T, IN)).astype(np.float32)


def test_model_carries_memory_across_segments():
  model = _model(num_layers=3)  # default knn_blocks=(-2,): block 1 has the memory
  first, second = _inputs(0), _inputs(1)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), first)
  assert list(shapes['memory']['encoder']) == ['layer_1']
  params = random_params(model, first, scale=0.3)
  memory = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes['memory'])
  apply = jax.jit(functools.partial(model.apply, mutable=['memory']))
  (logits, traces), state = apply({'params': params, 'memory': memory}, first)
  assert logits.shape == (B, T, OUT) and traces == {}
  np.testing.assert_array_equal(state['memory']['encoder']['layer_1']['attention']['count'],
                                [T, T])
  (carried, _), _ = apply({'params': params, 'memory': state['memory']}, second)
  (fresh, _), _ = apply({'params': params, 'memory': memory}, second)
  assert np.abs(np.asarray(carried) - np.asarray(fresh)).max() > 1e-4
  (reset, _), _ = apply({'params': params, 'memory': state['memory']}, second,
                        reset=np.array([True, False]))
  np.testing.assert_allclose(reset[0], fresh[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(reset[1], carried[1], rtol=1e-5, atol=1e-6)
  # Causal within the segment: changing step 4 leaves earlier logits alone.
  (changed, _), _ = apply({'params': params, 'memory': state['memory']},
                          second.copy() + (np.arange(T) == 4)[None, :, None])
  np.testing.assert_allclose(changed[:, :4], carried[:, :4], rtol=0, atol=1e-6)
  assert np.abs(np.asarray(changed[:, 4]) - np.asarray(carried[:, 4])).max() > 1e-4


def test_model_parameters_do_not_depend_on_memory_size():
  x = _inputs()
  on = jax.eval_shape(_model().init, jax.random.PRNGKey(0), x)
  off = jax.eval_shape(_model(memory_size=0).init, jax.random.PRNGKey(0), x)
  assert 'memory' not in off
  assert jax.tree.map(lambda s: s.shape, on['params']) == \
      jax.tree.map(lambda s: s.shape, off['params'])


@pytest.mark.parametrize('overrides, field', [
    (dict(top_k=N + 1), 'model.top_k'),
    (dict(top_k=0), 'model.top_k'),
    (dict(memory_size=-1), 'model.memory_size'),
    (dict(num_heads=3), 'model.num_heads'),
    (dict(approximate=True, recall_target=1.5), 'model.recall_target'),
    (dict(knn_blocks=(2,)), 'model.knn_blocks'),
    (dict(knn_blocks=(-3,)), 'model.knn_blocks'),
])
def test_bad_config_raises_one_line(overrides, field):
  with pytest.raises(ValueError) as error:
    jax.eval_shape(_model(**overrides).init, jax.random.PRNGKey(0), _inputs())
  message = str(error.value)
  assert message.startswith(field) and '\n' not in message
  if 'knn_blocks' not in overrides and overrides != dict(num_heads=3):
    layer_fields = {k: v for k, v in overrides.items() if k != 'knn_blocks'}
    with pytest.raises(ValueError, match=f'^{field}'):
      jax.eval_shape(_layer(**layer_fields).init, jax.random.PRNGKey(0), _x())
