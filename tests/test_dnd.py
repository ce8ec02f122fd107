"""Differentiable neural dictionary (memflax/nn/dnd.py) and the dnd model."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, read_metrics
from memflax.models import dnd as dnd_model
from memflax.nn import dnd
from memflax.train import train_and_evaluate
from random_params import random_params

DELTA = 1e-3


def _numpy_lookup(q, keys, values, valid, p, delta=DELTA, strength=None, cotangent=None):
  """Brute-force float64 DND read for one sequence: q [Q, d], keys [N, d], values [N, v],
  valid [Q, N] -> (out [Q, v], chosen [Q] lists of entries nearest first, and, given a
  cotangent c [Q, v], the analytic gradients of Σ c·out w.r.t. q, keys, values, strength).

  a_i = s_i/(d_i+δ), Z = Σ a, w = a/Z, out = Σ w_i v_i with d_i = ‖q − h_i‖²:
  ∂L/∂v_i = w_i c;  ∂L/∂a_i = (c·v_i − c·out)/Z;  ∂a_i/∂d_i = −s_i/(d_i+δ)²;
  ∂d_i/∂q = 2(q − h_i) = −∂d_i/∂h_i;  ∂a_i/∂s_i = 1/(d_i+δ).
  """
  q, keys, values = (np.asarray(a, np.float64) for a in (q, keys, values))
  s = np.ones(len(keys)) if strength is None else np.asarray(strength, np.float64)
  out = np.zeros((len(q), values.shape[1]))
  grads = dict(q=np.zeros_like(q), keys=np.zeros_like(keys), values=np.zeros_like(values),
               strength=np.zeros_like(s))
  chosen = []
  for i in range(len(q)):
    d = np.sum((q[i] - keys) ** 2, axis=1)
    candidates = np.flatnonzero(valid[i])
    near = candidates[np.argsort(d[candidates], kind='stable')][:p]
    chosen.append(near)
    a = s[near] / (d[near] + delta)
    z = a.sum()
    if z == 0:
      continue
    w = a / z
    out[i] = w @ values[near]
    if cotangent is None:
      continue
    c = np.asarray(cotangent[i], np.float64)
    grads['values'][near] += w[:, None] * c
    da = (values[near] @ c - c @ out[i]) / z
    dd = da * -s[near] / (d[near] + delta) ** 2
    diff = q[i] - keys[near]
    grads['q'][i] += np.sum(dd[:, None] * 2 * diff, axis=0)
    np.add.at(grads['keys'], near, -dd[:, None] * 2 * diff)
    np.add.at(grads['strength'], near, da / (d[near] + delta))
  return out, chosen, grads


def _draw(seed, batch=2, length=9, d=3, v=4):
  rng = np.random.default_rng(seed)
  q, k = (rng.standard_normal((batch, length, d)).astype(np.float32) for _ in range(2))
  values = rng.standard_normal((batch, length, v)).astype(np.float32)
  strength = rng.uniform(0.2, 1.0, (batch, length)).astype(np.float32)
  return q, k, values, strength


@pytest.mark.parametrize('p, num_entries', [(1, 7), (3, 7), (4, 2)])  # p > N: padded
def test_lookup_and_its_gradients_equal_numpy(p, num_entries):
  rng = np.random.default_rng(p)
  q = rng.standard_normal((2, 5, 3)).astype(np.float32)
  keys = rng.standard_normal((2, num_entries, 3)).astype(np.float32)
  values = rng.standard_normal((2, num_entries, 4)).astype(np.float32)
  strength = rng.uniform(0.2, 1.0, (2, num_entries)).astype(np.float32)
  valid = rng.random((2, 5, num_entries)) < 0.7
  valid[:, 0] = False  # a query that sees nothing
  cot = rng.standard_normal((2, 5, 4)).astype(np.float32)

  def loss(q, keys, values, strength):
    out, _ = dnd.lookup(q, keys, values, valid, p, DELTA, strength)
    return jnp.sum(out * cot)

  out, info = jax.jit(dnd.lookup, static_argnums=4)(q, keys, values, valid, p, DELTA, strength)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, keys, values, strength)
  assert info['indices'].shape == (2, 5, p)
  for b in range(2):
    want, chosen, want_grads = _numpy_lookup(q[b], keys[b], values[b], valid[b], p,
                                             strength=strength[b], cotangent=cot[b])
    np.testing.assert_allclose(out[b], want, rtol=1e-4, atol=1e-5)
    for i, near in enumerate(chosen):  # top-p = brute force, nearest first
      np.testing.assert_array_equal(np.asarray(info['indices'][b, i])[info['valid'][b, i]], near)
      np.testing.assert_allclose(info['weights'][b, i].sum(), 1.0 if len(near) else 0.0,
                                 rtol=1e-5)
    for got, name in zip(grads, ('q', 'keys', 'values', 'strength')):
      np.testing.assert_allclose(got[b], want_grads[name], rtol=2e-3, atol=1e-4, err_msg=name)
  np.testing.assert_array_equal(out[:, 0], 0.0)


def test_causal_form_equals_numpy_and_hides_the_current_step():
  q, k, v, s = _draw(1)
  p, length = 3, q.shape[1]
  out, info = jax.jit(dnd.causal_lookup, static_argnums=3)(q, k, v, p, DELTA, s)
  causal = np.tril(np.ones((length, length), bool), k=-1)  # entry s visible at t > s
  for b in range(2):
    want, chosen, _ = _numpy_lookup(q[b], k[b], v[b], causal, p, strength=s[b])
    np.testing.assert_allclose(out[b], want, rtol=1e-4, atol=1e-5)
    for t, near in enumerate(chosen):
      np.testing.assert_array_equal(np.asarray(info['indices'][b, t])[info['valid'][b, t]],
                                    near)
  np.testing.assert_array_equal(out[:, 0], 0.0)
  # Moving entry t0 right onto the query at t0 changes nothing up to t0, and later reads do.
  t0 = 4
  moved = k.copy()
  moved[:, t0] = q[:, t0]
  changed, _ = dnd.causal_lookup(q, moved, v + (np.arange(length) == t0)[None, :, None],
                                 p, DELTA, s)
  np.testing.assert_allclose(changed[:, :t0 + 1], out[:, :t0 + 1], rtol=0, atol=1e-6)
  assert np.abs(np.asarray(changed[:, t0 + 1:]) - np.asarray(out[:, t0 + 1:])).max() > 1e-3


@pytest.mark.parametrize('capacity', [9, 12])  # T = 9
def test_recurrent_form_equals_the_causal_form_when_everything_fits(capacity):
  q, k, v, s = _draw(2)
  p = 3
  want, want_info = dnd.causal_lookup(q, k, v, p, DELTA, s)
  blocked, blocked_info = dnd.causal_lookup(q, k, v, p, DELTA, s, query_block=4)
  got, info, _ = jax.jit(dnd.recurrent_lookup, static_argnums=(3, 4))(q, k, v, capacity, p,
                                                                        DELTA, s)
  np.testing.assert_array_equal(info['slot'], np.broadcast_to(np.arange(9), (2, 9)))
  for out, other in ((got, info), (blocked, blocked_info)):
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(other['valid'], want_info['valid'])
    np.testing.assert_array_equal(np.where(other['valid'], other['indices'], -1),
                                  np.where(want_info['valid'], want_info['indices'], -1))
    np.testing.assert_allclose(other['weights'], want_info['weights'], rtol=1e-6, atol=1e-6)


def _numpy_lru(q, k, v, capacity, p, delta=DELTA):
  """The recurrent form for one sequence as a plain loop: read (stamping the retrieved
  slots with t), then write to the first empty slot, else the least recently used one."""
  keys, values = np.zeros((capacity, k.shape[1])), np.zeros((capacity, v.shape[1]))
  last_used = np.full(capacity, -1)
  outs, slots = [], []
  for t in range(len(q)):
    filled = np.flatnonzero(last_used >= 0)
    out, (near,), _ = _numpy_lookup(q[t:t + 1], keys, values, (last_used >= 0)[None], p, delta)
    outs.append(out[0])
    last_used[near] = t
    empty = np.flatnonzero(last_used < 0)
    slot = empty[0] if len(empty) else int(np.argmin(last_used))
    assert len(filled) == capacity or slot == len(filled)
    keys[slot], values[slot], last_used[slot] = k[t], v[t], t
    slots.append(slot)
  return np.array(outs), np.array(slots)


def test_lru_overwrites_against_numpy_loop():
  # T = 14 writes into 4 slots: some slots are kept by being retrieved, others overwritten.
  rng = np.random.default_rng(3)
  # Few distinct key regions, so that retrievals repeat and LRU differs from FIFO.
  centres = rng.standard_normal((3, 2)) * 3
  k = (centres[rng.integers(0, 3, (2, 14))] + 0.3 * rng.standard_normal((2, 14, 2)))
  q = (centres[rng.integers(0, 3, (2, 14))] + 0.3 * rng.standard_normal((2, 14, 2)))
  v = rng.standard_normal((2, 14, 3))
  q, k, v = (a.astype(np.float32) for a in (q, k, v))
  out, info, _ = jax.jit(dnd.recurrent_lookup, static_argnums=(3, 4))(q, k, v, 4, 2)
  fifo_differs = False
  for b in range(2):
    want, slots = _numpy_lru(q[b], k[b], v[b], 4, 2)
    np.testing.assert_array_equal(info['slot'][b], slots)
    np.testing.assert_allclose(out[b], want, rtol=1e-4, atol=1e-5)
    fifo_differs |= not np.array_equal(slots, np.arange(14) % 4)
  assert fifo_differs  # the case exercises retrieval stamps, not only write order


def test_empty_store_reads_zero_with_finite_gradients():
  q, k, v, _ = _draw(4, length=5)
  s = np.stack([np.ones(5), np.zeros(5)]).astype(np.float32)  # row 1: every entry weighs 0

  def loss(q, k, v, s):
    parallel, _ = dnd.causal_lookup(q, k, v, 2, DELTA, s)
    recurrent, _, _ = dnd.recurrent_lookup(q, k, v, 3, 2, DELTA, s)
    return jnp.sum(parallel ** 2) + jnp.sum(recurrent ** 2), (parallel, recurrent)

  grads, outs = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, s)
  for out in outs:
    np.testing.assert_array_equal(out[:, 0], 0.0)  # nothing stored before step 0
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.all(np.isfinite(out)) and np.abs(out[0, 1:]).min() > 0
  assert all(np.all(np.isfinite(g)) for g in grads)


SMALL = dict(embed_size=8, key_size=4, value_size=6, hidden_size=8, num_neighbours=3)


def test_model_capacity_forms_agree_and_traces():
  x = np.random.default_rng(5).standard_normal((2, 7, 5)).astype(np.float32)
  parallel = dnd_model.Model(output_size=4, **SMALL)
  params = {'params': random_params(parallel, x)}
  logits, traces = jax.jit(parallel.apply)(params, x)
  assert logits.shape == (2, 7, 4)
  assert traces['dnd_weights'].shape == traces['dnd_indices'].shape == (2, 7, 3)
  np.testing.assert_array_equal(traces['dnd_nearest_distance'][:, 0], -1.0)  # empty at t=0
  recurrent = dnd_model.Model(output_size=4, capacity=7, **SMALL)
  got, _ = jax.jit(recurrent.apply)(params, x)
  np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('field, value, message', [
    ('num_neighbours', 0, 'model.num_neighbours must be an integer >= 1'),
    ('capacity', 2, r'model.capacity \(2\) must be >= model.num_neighbours \(3\)'),
    ('capacity', -1, 'model.capacity must be an integer >= 0'),
    ('delta', 0.0, 'model.delta must be > 0'),
    ('conv_size', 1, 'model.conv_size must be an integer >= 2'),
    ('key_size', 0, 'model.key_size must be an integer >= 1'),
])
def test_bad_fields_raise_one_line(field, value, message):
  model = dnd_model.Model(output_size=4, **{**SMALL, field: value})
  with pytest.raises(ValueError, match=message) as error:
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 3, 5)))
  assert '\n' not in str(error.value)


def test_trains_on_tiny_mqar(tmp_path):
  spec = importlib.util.spec_from_file_location('cfg_dnd_mqar', REPO / 'configs' / 'dnd_mqar.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('tiny')
  config.update(num_train_steps=150, log_every_steps=10, eval_every_steps=150,
                checkpoint_every_steps=150)
  config.eval.lengths = (4,)
  config.log.update(tensorboard=False, progress=False)
  train_and_evaluate(config, tmp_path)
  rows = read_metrics(tmp_path)
  losses = [r['loss'] for r in rows if 'loss' in r]
  # Chance is ln 16 ≈ 2.77 nats over the 16 tokens.
  assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
  assert [r['eval_accuracy'] for r in rows if 'eval_accuracy' in r][-1] > 0.8, rows
