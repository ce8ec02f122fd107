"""The continual-learning run: `train_sequence(config, workdir)`.

Each task of the sequence is an ordinary resumable run of the one training loop
(memflax.train.run_loop) in its own sub-workdir `<workdir>/tasks/<index>_<key>/`, with its
own rolling orbax step checkpoints. Task t starts from snapshot t-1's parameters (a
fresh optimizer state and learning-rate schedule), and the strategy enters the Trainer
through its hooks: the padded task (memflax.continual.padded) and a regulariser added
to every step's loss. Everything a regulariser needs comes from the immutable snapshots
(anchor parameters, Fisher diagonals recomputed from them with fixed keys, the replay
buffer stored in them), so a run killed anywhere and rerun continues exactly: finished
tasks are skipped (their snapshots exist), the interrupted task resumes from its newest
step checkpoint, and a task whose training finished but whose snapshot was not yet
written is restored from its final checkpoint and snapshotted.

After the last task, `<workdir>/continual.json` and `<workdir>/continual_R.png` are
written from the rows stored in the snapshots (memflax.continual.report).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from memflax import config_checks, cpu_cores, preemption, tasks
from memflax import workdir as workdir_lib
from memflax.checkpoint import check_compatible
from memflax.continual import config as cl_config
from memflax.continual import replay as replay_lib
from memflax.continual import report, snapshots, strategies
from memflax.continual.padded import PaddedTask, interface_widths
from memflax.data.from_config import corpus_for
from memflax.train import Trainer, config_to_dict, run_loop

TASKS_DIR = 'tasks'
CORRUPT_SNAPSHOTS_DIR = 'corrupt_snapshots'
_FISHER_STREAM = 104_729   # key streams of their own: never a training or eval key
_REPLAY_STREAM = 130_363
_EVAL_STREAM = 7_919


class Sequence:
  """The tasks of a continual config, their padded interface and Trainers."""

  def __init__(self, config):
    self.config = config
    self.keys = cl_config.task_keys(config)
    self.sub_configs = [cl_config.sub_config(config, i) for i in range(len(self.keys))]
    raw = [tasks.build(c.task) for c in self.sub_configs]
    self.widths = interface_widths(raw)
    try:
      self.tasks = [PaddedTask(t, *self.widths) for t in raw]
    except ValueError as e:
      raise config_checks.ConfigError(f'continual.tasks: {e}') from None
    self._data = {}
    self._evaluators = {}

  def __len__(self):
    return len(self.keys)

  def name(self, index: int) -> str:
    return snapshots.snapshot_name(index, self.keys[index])

  def data(self, index: int):
    if not getattr(self.tasks[index], 'host_fed', False):
      return None
    if index not in self._data:
      self._data[index] = corpus_for(self.sub_configs[index])
    return self._data[index]

  def trainer(self, index: int, **hooks) -> Trainer:
    return Trainer(self.sub_configs[index], self.data(index), task=self.tasks[index], **hooks)

  def abstract_params(self):
    return self.trainer(0).abstract_state().params

  # ---------------------------------------------------------------- Evaluation
  def evaluate(self, params, index: int) -> dict[str, float]:
    """Task `index`'s metrics for `params` on its fixed held-out set (eval.num_sequences
    sequences from their own key; for a byte LM, the first eval.num_sequences validation
    windows), 'accuracy' included."""
    if index not in self._evaluators:
      trainer = self.trainer(index)
      n = self.config.eval.num_sequences
      if trainer.host_fed:
        self._evaluators[index] = functools.partial(trainer.validation_metrics, max_windows=n)
      else:
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed),
                                                    _EVAL_STREAM), _key_id(self.keys[index]))
        step = trainer.make_eval_step(n, key)
        self._evaluators[index] = lambda p: jax.device_get(step(p))
    return {k: float(v) for k, v in self._evaluators[index](params).items()}

  def row(self, params) -> list[dict[str, float]]:
    return [self.evaluate(params, j) for j in range(len(self))]


def _key_id(key: str) -> int:
  """A task key as a number to fold into PRNG keys: a task's held-out set depends on its
  key and the seed, not on its place in the sequence, so R entries of different runs
  (init_from, another order) are measured on the same sequences."""
  return zlib.crc32(key.encode()) & 0x7FFFFFFF


def validate(config, workdir: Path) -> tuple[Sequence, Path | None]:
  """Every check that can fail, before anything is written: the continual section, each
  task's config, existing snapshots and sub-workdirs, init_from. Returns the sequence
  and the init_from snapshot path (or None)."""
  cl_config.validate(config)
  seq = Sequence(config)
  for sub in seq.sub_configs:
    config_checks.validate(sub, len(cpu_cores.run_devices(sub)))
  if getattr(seq.tasks[0], 'host_fed', False):
    for i in range(len(seq)):
      seq.data(i)  # a missing corpus fails here, with its own one-line error
  _check_stored(config, workdir)
  for i in range(len(seq)):
    check_compatible(workdir / TASKS_DIR / seq.name(i), config_to_dict(seq.sub_configs[i]))
  source = None
  if str(config.continual.init_from).strip():
    source = snapshots.resolve(None, config.continual.init_from)
    meta = snapshots.read_meta(source)
    if meta.get('config', {}).get('model') != config_to_dict(config)['model'] or \
        tuple(meta.get('widths', ())) != seq.widths:
      raise snapshots.IncompatibleSnapshotError(
          f'continual.init_from={source} is a snapshot of another model or interface (model '
          f'{meta.get("config", {}).get("model")}, widths {meta.get("widths")}; this run: model '
          f'{config_to_dict(config)["model"]}, widths {list(seq.widths)})')
    snapshots.restore_params(source, seq.abstract_params())  # its layout must fit, too
  return seq, source


def _check_stored(config, workdir: Path) -> None:
  """The workdir's snapshots must come from this sequence and model."""
  here = config_to_dict(config)
  for index, name, path in snapshots.list_snapshots(workdir):
    try:
      stored = snapshots.read_meta(path).get('config', {})
    except snapshots.SnapshotCorruptError:
      continue  # the run sets it aside and rebuilds it (_set_aside_corrupt)
    for field in ('model', 'optimizer'):
      if stored.get(field) != here.get(field):
        raise snapshots.IncompatibleSnapshotError(
            f'{workdir} holds snapshot {name} of a different {field} (stored {stored.get(field)}, '
            f'this run {here.get(field)}); use another --workdir or the stored settings')
    stored_tasks = stored.get('continual', {}).get('tasks')
    if stored_tasks != here['continual']['tasks']:
      raise snapshots.IncompatibleSnapshotError(
          f'{workdir} holds snapshots of the task sequence {stored_tasks!r}, this run trains '
          f'{here["continual"]["tasks"]!r}; use another --workdir')
    # What the finished tasks were trained with must hold for the rest, or the sequence
    # would mix two experiments (logging and checkpoint cadence may change).
    for field in ('continual', 'seed', 'batch_size', 'num_train_steps'):
      if stored.get(field) != here.get(field):
        raise snapshots.IncompatibleSnapshotError(
            f'{workdir} holds snapshot {name} trained with {field}={stored.get(field)}, this '
            f'run has {field}={here.get(field)}; rerun with the stored settings or use '
            'another --workdir')


# ------------------------------------------------------------------ Strategies
class _Past:
  """What the strategies read from finished snapshots, restored once per process."""

  def __init__(self, seq: Sequence, workdir: Path):
    self.seq, self.workdir = seq, workdir
    self._params, self._fisher = {}, {}
    self._abstract = seq.abstract_params()

  def path(self, i: int) -> Path:
    return snapshots.snapshot_root(self.workdir) / self.seq.name(i)

  def params(self, i: int):
    if i not in self._params:  # host copies: the step closes over them as constants
      self._params[i] = jax.device_get(snapshots.restore_params(self.path(i), self._abstract))
    return self._params[i]

  def fisher(self, i: int):
    """F_i at θ_i on fisher_sequences sequences of task i (fixed key), recomputed from the
    snapshot whenever needed, so nothing but the snapshot has to be stored."""
    if i not in self._fisher:
      self._fisher[i] = fisher_for_task(self.seq, i, self.params(i))
    return self._fisher[i]


def fisher_for_task(seq: Sequence, index: int, params):
  """Diagonal Fisher of task `index` at `params` (memflax.continual.strategies)."""
  c = seq.config.continual
  trainer = seq.trainer(index)
  task, model = trainer.task, trainer.model
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seq.config.seed),
                                              _FISHER_STREAM), index)
  n = c.fisher_sequences
  chunk = next(s for s in (32, 16, 8, 4, 2, 1) if n % s == 0)
  if trainer.host_fed:
    tokens = np.stack([trainer.data.batch_for_step(seq.config.seed + _FISHER_STREAM, s, 1,
                                                   task.seq_length)[0] for s in range(n)])
    examples = task.batch_from_tokens(jnp.asarray(tokens))
  else:
    examples = task.make_batch(jax.random.fold_in(key, 0), n)
  examples = {k: examples[k] for k in ('inputs', 'targets', 'mask')}

  def example_loss(p, example):
    batch = jax.tree.map(lambda x: x[None], example)
    logits, _ = model.apply({'params': p}, batch['inputs'])
    return task.loss_and_metrics(logits, batch)[0]

  def sample_targets(p, example, k):
    logits, _ = model.apply({'params': p}, example['inputs'][None])
    logits = jax.lax.stop_gradient(task.task_logits(logits[0]))
    if jnp.issubdtype(example['targets'].dtype, jnp.floating):
      drawn = jax.random.bernoulli(k, jax.nn.sigmoid(logits)).astype(example['targets'].dtype)
    else:
      drawn = jax.random.categorical(k, logits).astype(example['targets'].dtype)
    return {**example, 'targets': drawn}

  fisher = jax.jit(functools.partial(
      strategies.fisher_diagonal, example_loss, kind=c.fisher,
      key=jax.random.fold_in(key, 1), sample_targets=sample_targets,
      num_samples=c.fisher_draws, chunk_size=chunk))
  return jax.device_get(fisher(params, examples))


def make_regulariser(seq: Sequence, past: _Past, t: int, replay_state: dict | None):
  """The strategy's hook for task t (None: nothing to add)."""
  c = seq.config.continual
  if t == 0 or c.strategy == 'naive':
    return None
  weights = strategies.past_weights(t, c.gamma, cl_config.alphas(seq.config)[:t])
  if c.strategy == 'l2':
    kept = list(range(max(0, t - c.l2_keep), t))
    anchors = [past.params(i) for i in kept]
    w = [float(weights[i]) for i in kept]
    def term(model, params, step, device):
      del model, step, device
      value = strategies.l2_penalty(params, anchors, w, c.l2_lambda)
      return value, {'penalty': value}
    return term
  if c.strategy == 'ewc':
    if c.ewc_mode == 'online':
      anchors = [past.params(t - 1)]
      fishers = [strategies.online_fisher([past.fisher(i) for i in range(t)], c.gamma)]
      w = [1.0]
    else:
      anchors = [past.params(i) for i in range(t)]
      fishers = [past.fisher(i) for i in range(t)]
      w = [float(x) for x in weights]
    def term(model, params, step, device):
      del model, step, device
      value = strategies.ewc_penalty(params, anchors, fishers, w, c.ewc_lambda)
      return value, {'penalty': value}
    return term
  # replay
  buffers = replay_state['examples']
  if not buffers:
    return None
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seq.config.seed),
                                              _REPLAY_STREAM), t)
  return replay_lib.replay_term(buffers, {i: seq.tasks[i] for i in buffers},
                                {i: float(weights[i]) for i in buffers}, c.replay_batch_size,
                                key, c.replay_weight)


def _load_replay(path: Path) -> dict:
  """{'slots', 'seen', 'examples': {i: {...}}} from a snapshot (empty buffer if none)."""
  arrays = snapshots.restore_replay(path)
  if not arrays:
    return None
  examples = {int(k[len('task'):]): {n: np.asarray(v) for n, v in d.items()}
              for k, d in arrays.items() if k.startswith('task')}
  return dict(slots=np.asarray(arrays['slots']), seen=int(arrays['seen']), examples=examples)


def _update_replay(seq: Sequence, state: dict | None, t: int) -> dict:
  """The buffer after task t's training stream (replay module docstring)."""
  c = seq.config
  if state is None:
    state = dict(slots=replay_lib.empty_slots(c.continual.replay_buffer_size), seen=0,
                 examples={})
  num_new = c.num_train_steps * c.batch_size
  slots = replay_lib.reservoir_update(state['slots'], state['seen'], t, num_new, c.seed)
  examples = {}
  for i in sorted(set(int(x) for x in slots[:, 0] if x >= 0)):
    mine = np.sort(slots[slots[:, 0] == i, 1])
    if i == t:
      examples[i] = replay_lib.training_examples(seq.trainer(i), mine)
    else:  # rows kept from the previous buffer, in item order
      old_items = np.sort(state['slots'][state['slots'][:, 0] == i, 1])
      rows = np.searchsorted(old_items, mine)
      examples[i] = {k: v[rows] for k, v in state['examples'][i].items()}
  return dict(slots=slots, seen=state['seen'] + num_new, examples=examples)


def _replay_arrays(state: dict) -> dict:
  out = {'slots': state['slots'], 'seen': np.asarray(state['seen'], np.int64)}
  out.update({f'task{i}': d for i, d in state['examples'].items()})
  return out


# ------------------------------------------------------------------ Run
def train_sequence(config, workdir: str | Path) -> dict:
  """Trains the sequence in `workdir` (resuming wherever it stopped); returns the
  continual.json dict. Raises ConfigError / SnapshotNotFoundError /
  IncompatibleSnapshotError / WorkdirError before anything is written."""
  workdir = workdir_lib.resolve(workdir)
  config_checks.validate(config, len(cpu_cores.run_devices(config)))
  seq, source = validate(config, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lib.RunLock(workdir, jax.process_index()), preemption.handling():
    return _run(seq, workdir, source)


def initial_params(seq: Sequence, source: Path | None):
  """θ before task 0: init_from's parameters, or the seed's initialisation."""
  if source is not None:
    return snapshots.restore_params(source, seq.abstract_params())
  return seq.trainer(0).init_state().params


def _set_aside_corrupt(seq: Sequence, workdir: Path) -> None:
  """Checks every finished snapshot against its integrity record; a damaged one is moved
  to `<workdir>/corrupt_snapshots/` (never deleted) with one warning line, and the run
  rebuilds it: from its task's final step checkpoint, or by retraining the task from the
  previous snapshot, which gives the same bits (every step is a pure function of the
  snapshots and the seed)."""
  abstract = seq.trainer(0).abstract_state()
  abstract = {'params': abstract.params, 'opt_state': abstract.opt_state,
              **({'memory': abstract.memory} if hasattr(abstract, 'memory') else {})}
  for _, name, path in snapshots.list_snapshots(workdir):
    try:
      snapshots.verify(path, abstract)
      snapshots.make_read_only(path)
    except snapshots.SnapshotCorruptError as e:
      target = workdir / CORRUPT_SNAPSHOTS_DIR / f'{name}-{int(time.time())}'
      if jax.process_index() == 0:
        print(f'warning: {e}; moved it to {target} and rebuilding it', file=sys.stderr,
              flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
      multihost_utils.sync_global_devices(f'corrupt_snapshot_{name}')


def _run(seq: Sequence, workdir: Path, source: Path | None) -> dict:
  config, c = seq.config, seq.config.continual
  _set_aside_corrupt(seq, workdir)
  past = _Past(seq, workdir)
  replay_state = None
  config_dict = config_to_dict(config)
  for t in range(len(seq)):
    path = past.path(t)
    if path.exists():  # finished before: nothing to do but read what later tasks need
      if c.strategy == 'replay':
        replay_state = _load_replay(path)
      continue
    start = past.params(t - 1) if t else initial_params(seq, source)
    if jax.process_index() == 0:
      origin = seq.name(t - 1) if t else (f'snapshot {source}' if source else 'initialisation')
      print(f'continual: task {t + 1}/{len(seq)} {seq.keys[t]} ({c.strategy}), parameters '
            f'from {origin if t == 0 else "snapshot " + origin}', flush=True)
    hook = make_regulariser(seq, past, t, replay_state)
    trainer = seq.trainer(t, regulariser=hook, initial_params=start)
    subdir = workdir / TASKS_DIR / seq.name(t)
    subdir.mkdir(parents=True, exist_ok=True)
    state = run_loop(trainer, config_to_dict(seq.sub_configs[t]), subdir,
                     description=f'task {t + 1}/{len(seq)}')
    meta = dict(index=t, key=seq.keys[t], task=config_dict['continual']['task_fields'][seq.keys[t]],
                config=config_dict, widths=list(seq.widths), strategy=c.strategy,
                row=seq.row(state.params), train_time_s=_train_time(subdir),
                init_from=str(source) if source else None)
    if t == 0:  # b_j: the parameters before any training, on every task
      meta['initial_row'] = seq.row(start)
    arrays = None
    if c.strategy == 'replay':
      replay_state = _update_replay(seq, replay_state, t)
      arrays = _replay_arrays(replay_state)
    snapshots.save(path, {'params': state.params, 'opt_state': state.opt_state,
                          'memory': getattr(state, 'memory', None)}, meta, arrays)
    if preemption.requested() and t + 1 < len(seq):  # SIGTERM during the task switch
      raise preemption.Preempted(f'SIGTERM: task {t + 1}/{len(seq)} is finished and its '
                                 f'snapshot {path.name} saved; rerun the same command to go on')
  result = report.summarise(seq, workdir)
  if jax.process_index() == 0:
    json_path, png = report.write(result, workdir)
    print(f'done: continual ({c.strategy}): ACC {result["ACC"]:.4f}, BWT {result["BWT"]:+.4f}, FWT '
          f'{result["FWT"]:+.4f}, forgetting {result["forgetting"]:.4f}; wrote {json_path} and '
          f'{png}', flush=True)
  return result


def _train_time(subdir: Path) -> float | None:
  """The sub-run's cumulative training wall clock (its last metrics row that has one)."""
  try:
    rows = [json.loads(line) for line in (subdir / 'metrics.jsonl').read_text().splitlines()]
  except (OSError, ValueError):
    return None
  times = [r['train_time_s'] for r in rows if 'train_time_s' in r]
  return times[-1] if times else None
