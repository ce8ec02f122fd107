"""Byte-level language modelling through the harness: loss in bits, eval.json, exact resume,
bad corpora."""

import json
import math
import os
import shutil
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import error_lines, read_metrics, run_cli
from memflax import evaluate
from memflax.data import bigram_bits_per_byte, bigram_counts, load_text_corpus
from memflax.tasks.byte_lm import Task

TINY = '--config=configs/transformer_lm.py:tiny'
JSON_PACKAGE = os.path.join(sysconfig.get_paths()['stdlib'], 'json')


def test_loss_is_cross_entropy_in_bits_per_byte():
  task = Task(seq_length=4)
  tokens = jnp.array([[1, 2, 3, 4, 5]], jnp.uint8)
  batch = task.batch_from_tokens(tokens)
  np.testing.assert_array_equal(batch['targets'], [[2, 3, 4, 5]])
  np.testing.assert_array_equal(jnp.argmax(batch['inputs'], -1), [[1, 2, 3, 4]])
  _, uniform = task.loss_and_metrics(jnp.zeros((1, 4, 256)), batch)
  assert float(uniform['bits_per_byte']) == pytest.approx(8.0, abs=1e-5)
  # Probability 1/2 on the right byte at every position: exactly one bit per byte.
  logits = jnp.full((1, 4, 256), -1e9).at[0, jnp.arange(4), batch['targets'][0]].set(0.0)
  logits = logits.at[0, jnp.arange(4), 0].set(0.0)
  _, half = task.loss_and_metrics(logits, batch)
  assert float(half['bits_per_byte']) == pytest.approx(1.0, abs=1e-5)
  # Masked rows do not count.
  both = task.batch_from_tokens(jnp.concatenate([tokens, tokens]), row_mask=jnp.array([1, 0]))
  _, masked = task.loss_and_metrics(jnp.concatenate([logits, jnp.zeros((1, 4, 256))]), both)
  assert float(masked['bits_per_byte']) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope='module')
def lm_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('lm')
  workdir, data = root / 'run', root / 'data'
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', f'--config.data.dir={data}',
                 '--config.num_train_steps=40', '--config.checkpoint_every_steps=20',
                 '--config.eval_every_steps=20')
  assert proc.returncode == 0, proc.stderr
  return workdir, data


def test_lm_trains_and_eval_reports_bits_per_byte_against_the_bigram(lm_run):
  workdir, data = lm_run
  rows = read_metrics(workdir)
  evals = [r['eval_bits_per_byte'] for r in rows if 'eval_bits_per_byte' in r]
  assert len(evals) == 2 and evals[1] < evals[0] and evals[1] < 8.0  # better than uniform
  proc = run_cli('eval.py', f'--workdir={workdir}', '--num_sequences=50')
  assert proc.returncode == 0, proc.stderr
  result = json.loads((workdir / 'eval.json').read_text())
  assert set(result) == {'lm'}
  lm = result['lm']
  assert {'val_bits_per_byte', 'bigram_bits_per_byte'} <= set(lm) and lm['num_windows'] == 50
  # The bigram figure is the add-one bigram of the training split on the same 50 windows.
  corpus = load_text_corpus([JSON_PACKAGE], data_dir=data)
  windows = np.concatenate(list(corpus.validation_batches(50, 32, max_batches=1)))
  expected = bigram_bits_per_byte(bigram_counts(corpus.chunks('train')), windows)
  assert lm['bigram_bits_per_byte'] == pytest.approx(expected, rel=1e-9)
  assert 0 < lm['val_bits_per_byte'] < 8


def test_lm_resume_is_bit_exact(lm_run, tmp_path):
  reference, data = lm_run
  # The reference run as it stood at step 20: its later checkpoint never written.
  workdir = tmp_path / 'resumed'
  shutil.copytree(reference, workdir, ignore=shutil.ignore_patterns('40', '.lock-*'))
  proc = run_cli('train.py', TINY, f'--workdir={workdir}', f'--config.data.dir={data}',
                 '--config.num_train_steps=40', '--config.checkpoint_every_steps=20',
                 '--config.eval_every_steps=20')
  assert proc.returncode == 0 and 'resumed from step 20' in proc.stdout, proc.stderr
  _, expected, _ = evaluate.restore(reference)
  _, actual, step = evaluate.restore(workdir)
  assert step == 40
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _bad_corpus_cases(tmp_path):
  binary = tmp_path / 'blob.py'
  binary.write_bytes(b'import os\x00\x01\x02')
  empty = tmp_path / 'empty'
  empty.mkdir()
  small = tmp_path / 'small.py'
  small.write_text('x = 1\n' * 5)
  return [
      ([f'--config.data.paths={tmp_path / "missing"}'], 'does not exist'),
      ([f'--config.data.paths={binary}'], str(binary)),
      ([f'--config.data.paths={empty}'], 'no '),
      ([f'--config.data.paths={small}', '--config.task.seq_length=64'], 'seq_len 64'),
  ]


def test_bad_corpus_is_one_line_and_leaves_nothing(tmp_path):
  data = tmp_path / 'data'
  for overrides, expected in _bad_corpus_cases(tmp_path):
    workdir = tmp_path / 'run'
    proc = run_cli('train.py', TINY, f'--workdir={workdir}', f'--config.data.dir={data}',
                   *overrides)
    assert proc.returncode == 2, (overrides, proc.stderr)
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], lines
    assert not workdir.exists()
    # Nothing half-built that a later run would trust.
    assert not list(data.rglob('dataset_info.json')) or 'seq_len' in expected


@pytest.mark.slow
def test_eight_devices_match_one_on_text(lm_run, tmp_path):
  _, data = lm_run

  def final_loss(workdir, devices):
    proc = run_cli('train.py', TINY, f'--workdir={workdir}', f'--config.data.dir={data}',
                   '--config.num_train_steps=20', '--config.batch_size=16',
                   '--config.log_every_steps=20', devices=devices)
    assert proc.returncode == 0, proc.stderr
    return next(r for r in read_metrics(workdir) if r['step'] == 20 and 'loss' in r)

  one, eight = final_loss(tmp_path / 'one', None), final_loss(tmp_path / 'eight', 8)
  assert one['loss'] < math.log(256)
  assert eight['loss'] == pytest.approx(one['loss'], rel=1e-4)
  assert eight['grad_norm'] == pytest.approx(one['grad_norm'], rel=1e-3)


def test_sample_is_deterministic_under_a_seed(lm_run):
  workdir, _ = lm_run
  args = ['sample.py', f'--workdir={workdir}', '--prompt=def ', '--length=60']
  first, again = run_cli(*args, '--seed=3'), run_cli(*args, '--seed=3')
  other = run_cli(*args, '--seed=4')
  assert first.returncode == 0, first.stderr
  assert first.stdout == again.stdout != other.stdout
  assert first.stdout.startswith('def ')
  greedy = run_cli(*args, '--temperature=0')
  assert greedy.returncode == 0 and greedy.stdout == run_cli(*args, '--top_k=1').stdout


@pytest.mark.parametrize('args, expected', [
    (['--prompt='], '--prompt is empty'),
    (['--length=0'], '--length must be a positive integer'),
])
def test_sample_bad_input_is_one_line(lm_run, args, expected):
  workdir, _ = lm_run
  proc = run_cli('sample.py', f'--workdir={workdir}', *args)
  assert proc.returncode == 2
  lines = error_lines(proc)
  assert len(lines) == 1 and expected in lines[0], lines


def test_windowed_generation_stays_within_the_trained_context(lm_run):
  from memflax import generate
  trainer, params, _ = evaluate.restore(lm_run[0])
  context = trainer.task.seq_length  # 32 in the tiny variant
  prompt = np.frombuffer(b'def ', np.uint8)[None]
  key = jax.random.PRNGKey(0)
  short = generate.generate_in_windows(trainer.model, params, prompt, 20, key, context)
  np.testing.assert_array_equal(short, generate.generate(trainer.model, params, prompt, 20,
                                                         jax.random.fold_in(key, 0)))
  long = generate.generate_in_windows(trainer.model, params, prompt, 100, key, context)
  assert long.shape == (1, 104)
  np.testing.assert_array_equal(long[:, :24], short[:, :24])  # the first window is the same
  np.testing.assert_array_equal(
      long, generate.generate_in_windows(trainer.model, params, prompt, 100, key, context))
