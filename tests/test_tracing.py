"""The traced example behind eval.py's PNGs and the TensorBoard images: the memory it shows
is the memory after each step, aligned in time with the write weightings."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from memflax.config_presets import compose
from memflax.tracing import make_tracer
from memflax.train import Trainer


def traced(model: str, **model_fields):
  config = compose(model, 'copy', 'tiny')
  config.model.update(model_fields)
  trainer = Trainer(config)
  params = trainer.init_state().params
  return config, trainer, params, make_tracer(trainer, size=6)(params)


@pytest.mark.parametrize('model, initial', [
    ('ntm', 1e-6),  # memory_init 'constant'
    ('dnc', 0.0),   # the DNC starts from an empty memory
])
def test_first_write_is_the_outer_product_of_the_write_weighting(model, initial):
  # Erase/add from a constant memory c: M_1 = c·(1 - w eᵀ) + w aᵀ, so M_1 - c = w (a - c·e)ᵀ,
  # a rank-one update whose row scales are exactly the first step's write weighting.
  fields = dict(frobenius_norm=False) if model == 'ntm' else {}
  config, _, _, trace = traced(model, **fields)
  n, w = config.model.memory_size, config.model.memory_width
  assert trace['memory'].shape == (trace['inputs'].shape[0], n, w)
  delta = trace['memory'][0] - initial
  weighting = trace['write_weights'][0, 0]
  row = delta.T @ weighting / (weighting @ weighting)
  np.testing.assert_allclose(delta, np.outer(weighting, row), atol=1e-6 * np.abs(delta).max())
  assert np.abs(delta).max() > 1e-4  # the write did something


def test_frobenius_memory_is_shown_after_normalisation():
  _, _, _, trace = traced('ntm', frobenius_norm=True)
  np.testing.assert_allclose(np.linalg.norm(trace['memory'], axis=(1, 2)), 1.0, rtol=1e-5)


def test_tracing_leaves_the_forward_pass_unchanged():
  _, trainer, params, trace = traced('ntm')
  batch = trainer.task.make_batch(jax.random.PRNGKey(0), 1, **trainer.task.probe(6))
  # Compiled like the tracer, so any difference is the tracing's: eager op-by-op runs
  # may round differently from any compiled program (1 ulp here since the NTM's memory
  # is carried slots-last).
  logits, _ = jax.jit(trainer.model.apply)({'params': params}, batch['inputs'])
  np.testing.assert_array_equal(np.asarray(jax.nn.sigmoid(logits[0])), trace['outputs'])
  np.testing.assert_array_equal(np.asarray(batch['inputs'][0]), trace['inputs'])


def test_models_without_memory_trace_only_their_outputs():
  _, _, _, trace = traced('lstm')
  assert set(trace) == {'inputs', 'targets', 'mask', 'outputs'}
