"""Every config in configs/ is valid and its tiny variant trains through the real harness."""

import dataclasses
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from conftest import REPO, read_metrics
from memflax import config_checks, models, tasks
from memflax.config_presets import compose
from memflax.train import train_and_evaluate

CONFIGS = sorted(p.name for p in (REPO / 'configs').glob('*.py'))


def _load(name: str, variant: str = ''):
  spec = importlib.util.spec_from_file_location(f'cfg_{Path(name).stem}', REPO / 'configs' / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _num_params(config) -> int:
  task = tasks.build(config.task)
  model = models.build(config.model, task.output_size)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 3, task.input_size)))
  return sum(x.size for x in jax.tree.leaves(shapes['params']))


def test_every_model_has_a_copy_config():
  assert {f'{m}_copy.py' for m in models.available()} <= set(CONFIGS)


def test_ntm_and_lstm_have_a_config_for_every_task():
  algorithmic = [t for t in tasks.available()
                 if not getattr(tasks.build(ml_collections.ConfigDict({'name': t})), 'host_fed',
                                False)]
  assert len(algorithmic) == 6
  assert {f'{m}_{t}.py' for m in ('ntm', 'lstm') for t in algorithmic} <= set(CONFIGS)
  assert {f'{m}_lm.py' for m in ('lstm', 'transformer', 'kv_memory_transformer')} <= set(CONFIGS)


def test_configs_compose_presets_instead_of_copying_settings():
  # Each config file names its model and task; the settings live in memflax/config_presets.
  for name in CONFIGS:
    code = [l for l in (REPO / 'configs' / name).read_text().split('"""')[-1].splitlines()
            if l.strip() and not l.strip().startswith('#')]
    assert len(code) <= 6, f'{name} repeats settings: {code}'


@pytest.mark.parametrize('name', CONFIGS)
def test_config_validates(name):
  config_checks.validate(_load(name), num_devices=1)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_names_every_model_field(name):
  # Every model field is set by the presets, so a stored config says exactly what was run.
  config = _load(name)
  model_cls = models.model_class(config.model.name)
  fields = {f.name for f in dataclasses.fields(model_cls)} - {'parent', 'name', 'output_size'}
  assert set(config.model.keys()) - {'name'} == fields


def test_pair_presets_apply_to_their_pair_only_and_yield_to_overrides():
  recall = compose('ntm', 'associative_recall')
  assert not recall.model.frobenius_norm and recall.learning_rate == 2e-3
  # The same model on copy keeps its own preset (Frobenius on, lr 3e-3, three buckets).
  copy = compose('ntm', 'copy')
  assert copy.model.frobenius_norm and copy.learning_rate == 3e-3 and copy.length_buckets == 3
  assert compose('lstm', 'associative_recall').learning_rate == 1e-3
  # The LSTM's long-sequence tasks get budgets that fit the task table's 30 minutes.
  assert compose('lstm', 'repeat_copy').num_train_steps == 3_000
  assert compose('lstm', 'copy').num_train_steps == 5_000
  # What the caller passes wins over the pair's settings.
  mine = compose('ntm', 'associative_recall', model_fields=dict(frobenius_norm=True),
                 learning_rate=1e-4)
  assert mine.model.frobenius_norm and mine.learning_rate == 1e-4


@pytest.mark.parametrize('name, expected', [
    ('ntm_copy.py', 62_260),        # 100-unit LSTM controller, 1 read + 1 write head, 128×20
    ('lstm_copy.py', 1_325_064),    # 3 × 256 LSTM: 272,384 + 2 × 525,312 + 2,056 read-out
    ('rnn_copy.py', 70_152),
    ('gru_copy.py', 600_328),
])
def test_parameter_counts(name, expected):
  assert _num_params(_load(name)) == expected


@pytest.mark.parametrize('name', CONFIGS)
def test_tiny_variant_trains(tmp_path, name):
  config = _load(name, 'tiny')
  config.update(num_train_steps=20, checkpoint_every_steps=20, eval_every_steps=20)
  state = train_and_evaluate(config, tmp_path)
  assert int(state.step) == 20
  rows = read_metrics(tmp_path)
  metric = f'eval_{tasks.build(config.task).primary_metric}'
  assert any(metric in r for r in rows), rows
  assert all(jnp.isfinite(r['loss']) for r in rows if 'loss' in r)
