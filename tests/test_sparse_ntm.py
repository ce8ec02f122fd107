"""memflax.models.sparse_ntm: interface and shapes, sparsity of the head weightings,
pinned parameter count, reduction to the NTM at top_m = memory_size, config, and a
short copy-task training run."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax import models
from memflax.models import ntm, sparse_ntm
from memflax.tasks.copy import Task
from short_training import train_copy

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(output_size=8, controller_size=64, memory_size=16, memory_width=8)


def _batch(seed=0, batch=4, max_length=5):
  return Task(num_bits=8, max_length=max_length).make_batch(jax.random.PRNGKey(seed), batch)


def _num_params(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


HEADS = dict(SMALL, num_read_heads=2, num_write_heads=2, memory_init='random')


@pytest.fixture(scope='module')
def two_head_setup():
  """Shared inputs and parameters (compiling each model once keeps this file fast)."""
  inputs = _batch(seed=3)['inputs']  # [4, 11, 9]
  # jit: an eager init dispatches the scan body op by op, several times slower here.
  return inputs, jax.jit(sparse_ntm.Model(top_m=3, **HEADS).init)(jax.random.PRNGKey(2), inputs)


def test_shapes_and_exactly_top_m_slots_per_head(two_head_setup):
  inputs, variables = two_head_setup
  logits, traces = sparse_ntm.Model(top_m=3, **HEADS).apply(variables, inputs)
  assert logits.shape == (4, 11, 8)
  assert traces['read_weights'].shape == traces['write_weights'].shape == (4, 11, 2, 16)
  assert bool(jnp.all(jnp.isfinite(logits)))
  for w in (np.asarray(traces['read_weights']), np.asarray(traces['write_weights'])):
    np.testing.assert_array_equal(np.count_nonzero(w, axis=-1), 3)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  # Heads do move: the write focus is not the same set of slots at every step.
  assert len({tuple(np.flatnonzero(w)) for w in np.asarray(traces['write_weights'])[0, :, 0]}) > 1


def test_top_m_at_least_memory_size_is_the_ntm(two_head_setup):
  inputs, variables = two_head_setup
  want_logits, want = ntm.Model(**HEADS).apply(variables, inputs)
  # top_m above memory_size clips to it: every slot selected, i.e. dense addressing.
  got_logits, got = sparse_ntm.Model(top_m=40, **HEADS).apply(variables, inputs)
  np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=1e-5)
  for name in ('read_weights', 'write_weights'):
    np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5)


def test_parameter_count_is_pinned_and_matches_the_ntm():
  inputs = _batch()['inputs']
  # eval_shape: parameter shapes without compiling the scan.
  params = jax.eval_shape(sparse_ntm.Model(top_m=4, **SMALL).init, jax.random.PRNGKey(0),
                          inputs)['params']
  # LSTM (9 + 8 + 64)·256 + 256 = 20992; read head 64·14 + 14 = 910 (key 8, β, g,
  # 3 shifts, γ); write head 64·30 + 30 = 1950 (+ erase 8, add 8); readout 72·8 + 8 = 584.
  assert _num_params(params) == 24436
  dense = jax.eval_shape(ntm.Model(**SMALL).init, jax.random.PRNGKey(0), inputs)['params']
  assert jax.tree.map(lambda p: p.shape, params) == jax.tree.map(lambda p: p.shape, dense)


def test_config_names_every_model_field():
  spec = importlib.util.spec_from_file_location('sparse_ntm_copy', ROOT / 'configs/sparse_ntm_copy.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert 'sparse_ntm' in models.available()
  fields = {f.name for f in dataclasses.fields(sparse_ntm.Model)} - {'parent', 'name',
                                                                       'output_size'}
  assert set(config.model.keys()) - {'name'} == fields
  model = models.build(config.model, output_size=8)
  assert isinstance(model, sparse_ntm.Model) and model.top_m == 8


@pytest.mark.slow
def test_short_copy_training_cuts_the_loss():
  first, last = train_copy(sparse_ntm.Model(top_m=4, **SMALL), steps=300)
  assert np.isfinite(last)
  assert last < 0.7 * first, (first, last)  # about 0.69 -> 0.38 when written
