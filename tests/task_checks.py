"""Checks every task must pass, shared by the tests/test_tasks_*.py files."""

from __future__ import annotations

import dataclasses

import chex
import jax
import numpy as np


def assert_pure_function_of_key(task, batch_size: int = 8, **overrides) -> None:
  """Same key, same batch (every array); another key, other inputs."""
  a = jax.device_get(task.make_batch(jax.random.PRNGKey(5), batch_size, **overrides))
  b = jax.device_get(task.make_batch(jax.random.PRNGKey(5), batch_size, **overrides))
  c = jax.device_get(task.make_batch(jax.random.PRNGKey(6), batch_size, **overrides))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert not np.array_equal(a['inputs'], c['inputs'])


def assert_compiles_once(task, batch_size: int = 4) -> None:
  """make_batch and loss_and_metrics under jit trace once for any number of keys."""

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key):
    batch = task.make_batch(key, batch_size)
    logits = jax.random.normal(key, batch['mask'].shape + (task.output_size,))
    return task.loss_and_metrics(logits, batch)

  chex.clear_trace_counter()
  for seed in range(3):
    loss, metrics = step(jax.random.PRNGKey(seed))
    assert loss.shape == () and all(v.shape == () for v in metrics.values())
    assert 'loss' in metrics and task.primary_metric in metrics


def assert_batch_contract(task, batch: dict) -> None:
  """The shapes and dtypes every model and the trainer rely on."""
  b, t = batch['mask'].shape
  assert batch['inputs'].shape == (b, t, task.input_size)
  assert batch['inputs'].dtype == np.float32 and batch['mask'].dtype == np.float32
  assert all(np.shape(v)[0] == b for v in batch.values())  # shardable along the batch
  assert set(np.unique(batch['mask'])) <= {0.0, 1.0}
  # The class constants are not config fields (config_checks accepts fields only).
  fields = {f.name for f in dataclasses.fields(task)}
  assert not fields & {'primary_metric', 'higher_is_better', 'range_fields'}


def numpy_bce(logits, targets, mask):
  """(loss, bit errors per sequence): BCE per masked bit, per sequence, then batch mean."""
  logits = np.asarray(logits, np.float64)
  p = 1 / (1 + np.exp(-logits))
  m = np.asarray(mask)[..., None]
  bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)) * m
  loss = (bce.sum((1, 2)) / (m.sum((1, 2)) * targets.shape[-1])).mean()
  errors = (np.abs((p > 0.5) - targets) * m).sum((1, 2)).mean()
  return loss, errors


def assert_bce_scoring(task, batch: dict) -> None:
  """Loss and bit errors equal numpy's; perfect logits score 0 errors and ~0 loss."""
  batch = jax.device_get(batch)
  targets = batch['targets']
  logits = np.random.default_rng(0).normal(size=targets.shape).astype(np.float32) * 3
  loss, metrics = task.loss_and_metrics(logits, batch)
  ref_loss, ref_errors = numpy_bce(logits, targets, batch['mask'])
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], ref_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['bit_errors_per_seq'], ref_errors, rtol=1e-6)
  loss, metrics = task.loss_and_metrics((targets * 2 - 1) * 30.0, batch)
  assert float(metrics['bit_errors_per_seq']) == 0.0 and float(loss) < 1e-6
