"""How the trainer carries a model's external store (memflax.train.MemoryTrainState) across
steps of document lanes: reset at each document's first segment, checkpointed and resumed
bit-exactly, split over devices by batch row. The model is tests/carry_memory_model.py,
whose store is a plain sum of inputs, so every check is exact against NumPy."""

import os
import sysconfig

import jax
import numpy as np
import pytest

from conftest import read_metrics, run_cli
from memflax import evaluate
from memflax.config_presets import compose
from memflax.data.from_config import corpus_for
from memflax.train import MemoryTrainState, TrainState, Trainer, train_and_evaluate

MODEL = 'tests.carry_memory_model'  # imported from the repository root, where tests run
CORPUS = os.path.join(sysconfig.get_paths()['stdlib'], 'importlib')  # 24 files: enough lanes
CONFIG_FILE = f'''
from memflax.config_presets import compose

def get_config(variant=''):
  c = compose({MODEL!r}, 'byte_lm', 'tiny')
  c.task.stream_documents = True
  c.batch_size = 8
  c.data.paths = {CORPUS!r}
  return c
'''


def _config(data_dir, **overrides):
  c = compose(MODEL, 'byte_lm', 'tiny')
  c.task.stream_documents = True
  c.batch_size = 4
  c.data.paths = CORPUS
  c.data.dir = str(data_dir)
  c.update(overrides)
  return c


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('corpus')


def test_store_holds_each_lanes_inputs_since_its_document_began(data_dir):
  config = _config(data_dir)
  trainer = Trainer(config, corpus_for(config))
  state = trainer.init_state()
  assert isinstance(state, MemoryTrainState)
  step_fn = trainer.compile_train_steps(state, 0)[None]
  lanes, total, count = trainer.lanes, np.zeros((4, 256)), np.zeros(4, np.int64)
  resets = 0
  for step in range(40):
    tokens, _, reset = lanes.batch_for_step(config.seed, step, 4)
    total[reset], count[reset] = 0, 0
    resets += int(reset[1:].sum()) if step == 0 else int(reset.sum())
    total += np.eye(256)[tokens[:, :-1]].sum(1)
    count += tokens.shape[1] - 1
    state, _ = step_fn(state, *trainer.step_inputs(step))
  assert resets > 0  # some lane started a new document on the way
  np.testing.assert_array_equal(np.asarray(state.memory['total']), total)
  np.testing.assert_array_equal(np.asarray(state.memory['count']), count)


def test_models_without_a_store_keep_the_plain_state(data_dir):
  config = compose('transformer', 'byte_lm', 'tiny')
  config.data.paths, config.data.dir = CORPUS, str(data_dir)
  trainer = Trainer(config, corpus_for(config))
  assert not trainer.has_memory
  assert type(trainer.abstract_state()) is TrainState  # old checkpoints keep their layout


def test_resume_restores_the_store_bit_exactly(data_dir, tmp_path):
  straight, halted = tmp_path / 'straight', tmp_path / 'halted'
  settings = dict(checkpoint_every_steps=5, eval_every_steps=10, log_every_steps=5)
  train_and_evaluate(_config(data_dir, num_train_steps=10, **settings), straight)
  train_and_evaluate(_config(data_dir, num_train_steps=5, **settings), halted)
  resumed = train_and_evaluate(_config(data_dir, num_train_steps=10, **settings), halted)
  _, expected, _ = evaluate.restore(straight)
  _, actual, step = evaluate.restore(halted)
  assert step == 10
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The store itself, restored from disk, equals the one the run ended with.
  trainer = Trainer(_config(data_dir, num_train_steps=10), corpus_for(_config(data_dir)))
  from memflax.checkpoint import Checkpointer
  checkpointer = Checkpointer(halted)
  try:
    restored, _, _ = checkpointer.restore_newest(trainer.abstract_state())
  finally:
    checkpointer.close()
  assert int(np.asarray(restored.memory['count']).min()) > 0
  for a, b in zip(jax.tree.leaves(restored.memory), jax.tree.leaves(resumed.memory)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  rows = [r for r in read_metrics(halted) if 'eval_bits_per_byte' in r]
  assert rows and 0 < rows[-1]['eval_bits_per_byte'] < 9


@pytest.mark.slow
def test_eight_devices_match_one_with_a_store(data_dir, tmp_path):
  config_file = tmp_path / 'carry_lm.py'
  config_file.write_text(CONFIG_FILE)

  def final(workdir, devices):
    proc = run_cli('train.py', f'--config={config_file}', f'--workdir={workdir}',
                   f'--config.data.dir={data_dir}', '--config.num_train_steps=12',
                   '--config.log_every_steps=12', '--config.eval_every_steps=12',
                   devices=devices)
    assert proc.returncode == 0, proc.stderr
    rows = read_metrics(workdir)
    row = next(r for r in rows if r['step'] == 12 and 'loss' in r)
    row.update(next(r for r in rows if r['step'] == 12 and 'eval_bits_per_byte' in r))
    _, state, _ = evaluate.restore(workdir)
    return row, state

  (one, one_state), (eight, eight_state) = final(tmp_path / 'one', None), \
      final(tmp_path / 'eight', 8)
  assert eight['loss'] == pytest.approx(one['loss'], rel=1e-5)
  assert eight['eval_bits_per_byte'] == pytest.approx(one['eval_bits_per_byte'], rel=1e-5)
  for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(eight_state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
