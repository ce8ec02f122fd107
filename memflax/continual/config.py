"""The `continual` config section: which tasks, in which order, and the strategy.

A continual config is an ordinary memflax config (model, optimizer, batch size,
`num_train_steps` = steps *per task*, eval.num_sequences = held-out sequences per task)
plus a `continual` section:

  tasks          comma-separated keys of `task_fields`, in training order
  task_fields    one task config per key ({'name': task module, fields...}); the key
                 names the snapshot (<index>_<key>), `name` picks memflax/tasks/<name>.py,
                 and an optional `data_paths` (byte LM) replaces data.paths for that task
  strategy       naive | l2 | ewc | replay
  gamma          γ of α̃_i = α_i γ^{(t-1)-i} (and of online EWC's F ← γF + F_new)
  alphas         comma-separated α_i per task ('' = all 1)
  l2_lambda      λ of snapshot coupling λ Σ α̃_i ‖θ − θ_i‖²
  l2_keep        how many of the latest snapshots l2 anchors to (1 = the seeds' θ_prev)
  ewc_lambda, ewc_mode (offline|online), fisher (empirical|exact),
  fisher_sequences (sequences of each task in its Fisher), fisher_draws (label draws
                 per sequence for the exact Fisher)
  replay_buffer_size, replay_batch_size (sequences drawn per past task per step),
  replay_weight (scales the replay term)
  init_from      '' or a snapshot directory of another run to start the sequence from

`sub_config(config, index)` is task `index`'s ordinary training config (config.task set
to that task), what the one training loop runs in `<workdir>/tasks/<index>_<key>`.
"""

from __future__ import annotations

import ml_collections

from memflax import tasks
from memflax.config_checks import ConfigError
from memflax.continual.strategies import EWC_MODES, FISHER_KINDS, STRATEGIES


def continual_section(task_fields: dict[str, dict], sequence: tuple[str, ...]
                      ) -> ml_collections.ConfigDict:
  """Defaults for the `continual` section; task_fields: key -> {'name', fields...}."""
  c = ml_collections.ConfigDict()
  c.tasks = ','.join(sequence)
  c.task_fields = ml_collections.ConfigDict({k: dict(v) for k, v in task_fields.items()})
  c.strategy = 'naive'
  c.gamma = 1.0
  c.alphas = ''
  # Measured on configs/cl_ntm_tasks.py, seed 0 (README): naive drift ‖θ − θ_prev‖² is
  # 500–700; λ = 0.05 cut forgetting from 0.384 to 0.097, λ = 0.005 only to 0.288.
  c.l2_lambda = 0.05
  c.l2_keep = 1
  # There Σ F (θ − θ_prev)² is only 0.002–0.005 at naive drift (the per-sequence loss of a
  # fitted task has tiny gradients); λ = 1e5 cut forgetting to 0.251, λ = 5e3 to 0.291.
  c.ewc_lambda = 100_000.0
  c.ewc_mode = 'offline'
  c.fisher = 'empirical'
  c.fisher_sequences = 256
  c.fisher_draws = 1
  c.replay_buffer_size = 512
  c.replay_batch_size = 8
  c.replay_weight = 1.0
  c.init_from = ''
  return c


def task_keys(config) -> list[str]:
  return [k.strip() for k in str(config.continual.tasks).split(',') if k.strip()]


def alphas(config) -> list[float]:
  keys = task_keys(config)
  text = str(config.continual.alphas).strip()
  if not text:
    return [1.0] * len(keys)
  try:
    values = [float(a) for a in text.split(',')]
  except ValueError:
    raise ConfigError(f'continual.alphas must be comma-separated numbers, got {text!r}') from None
  if len(values) != len(keys) or min(values) < 0:
    raise ConfigError(f'continual.alphas needs {len(keys)} non-negative numbers (one per task), '
                      f'got {text!r}')
  return values


def sub_config(config, index: int) -> ml_collections.ConfigDict:
  """Task `index`'s training config: config with `task` replaced (and data.paths for a
  task that names its own corpus)."""
  key = task_keys(config)[index]
  fields = dict(config.continual.task_fields[key])
  data_paths = fields.pop('data_paths', None)
  c = ml_collections.ConfigDict(config.to_dict())
  c.task = ml_collections.ConfigDict(fields)
  if data_paths is not None:
    c.data.paths = data_paths
  return c


def validate(config) -> None:
  """Raises ConfigError (one line) on the first problem of the continual section."""
  c = config.continual
  keys = task_keys(config)
  if not keys:
    raise ConfigError('continual.tasks is empty; name at least one task, e.g. '
                      f'--config.continual.tasks={",".join(c.task_fields.keys())}')
  unknown = [k for k in keys if k not in c.task_fields]
  if unknown:
    raise ConfigError(f'continual.tasks names unknown task(s) {unknown}; known: '
                      f'{sorted(c.task_fields.keys())}')
  if len(set(keys)) != len(keys):
    raise ConfigError(f'continual.tasks repeats a task ({c.tasks}); give each entry its own '
                      'key in continual.task_fields')
  for key in keys:
    name = c.task_fields[key].get('name')
    if name not in tasks.available():
      raise ConfigError(f'continual.task_fields.{key}.name must be one of {tasks.available()}, '
                        f'got {name!r}')
    # The task's own checks (e.g. min <= max), as one line naming the task, before
    # anything builds it.
    fields = {k: v for k, v in c.task_fields[key].items() if k != 'data_paths'}
    try:
      tasks.build(ml_collections.ConfigDict(fields))
    except (TypeError, ValueError, OverflowError) as e:
      raise ConfigError(f'continual.task_fields.{key}: {str(e).splitlines()[0]}') from None
  if c.strategy not in STRATEGIES:
    raise ConfigError(f'continual.strategy must be one of {STRATEGIES}, got {c.strategy!r}')
  if c.fisher not in FISHER_KINDS:
    raise ConfigError(f'continual.fisher must be one of {FISHER_KINDS}, got {c.fisher!r}')
  if c.ewc_mode not in EWC_MODES:
    raise ConfigError(f'continual.ewc_mode must be one of {EWC_MODES}, got {c.ewc_mode!r}')
  for name in ('gamma', 'l2_lambda', 'ewc_lambda', 'replay_weight'):
    if not c[name] >= 0:
      raise ConfigError(f'continual.{name} must be >= 0, got {c[name]}')
  for name in ('l2_keep', 'fisher_sequences', 'fisher_draws', 'replay_buffer_size',
               'replay_batch_size'):
    if not (isinstance(c[name], int) and c[name] >= 1):
      raise ConfigError(f'continual.{name} must be an integer >= 1, got {c[name]!r}')
  alphas(config)
  # Replay regenerates a task's training sequences from (seed, step) as make_batch made
  # them; with several length buckets the step's sizes would also depend on the bucket.
  if config.get('length_buckets', 1) != 1:
    raise ConfigError(f'continual runs train each task with length_buckets=1, got '
                      f'{config.length_buckets}')


def compose_sequence(model: str, sequence: tuple[str, ...], variant: str = '',
                     task_fields: dict[str, dict] | None = None,
                     continual: dict | None = None, eval_sequences: int | None = None,
                     **harness) -> ml_collections.ConfigDict:
  """A continual config: `compose(model, first task, variant)`, each task of `sequence`
  from its preset, then `task_fields[key]` overrides, then the tiny variant's sizes (e.g. {'name':
  'byte_lm', 'data_paths': ...} for a key that is not a task name), then `harness`
  overrides and eval.num_sequences (not applied to the tiny variant, which stays a
  seconds-long smoke test) and `continual` defaults."""
  from memflax.config_presets import TASKS, TINY_TASKS, compose

  task_fields = task_fields or {}
  fields = {}
  for key in sequence:
    name = task_fields.get(key, {}).get('name', key)
    fields[key] = {'name': name, **TASKS[name]['fields'], **task_fields.get(key, {}),
                   **(TINY_TASKS[name] if variant == 'tiny' else {})}
  c = compose(model, fields[sequence[0]]['name'], variant)
  if variant != 'tiny':
    c.update(harness)
    if eval_sequences:
      c.eval.num_sequences = eval_sequences
  if 'length_buckets' in c:  # one training shape per task (see validate)
    c.length_buckets = 1
  c.continual = continual_section(fields, sequence)
  c.continual.update(continual or {})
  if variant == 'tiny':  # a smoke test: small Fisher sample and buffer
    c.continual.update(fisher_sequences=32, replay_buffer_size=64)
  return c


# Corpora for the byte-LM sequences, as packages (or files) of the running Python's standard
# library. Two halves of ordinary code teach one language: on seed 0, naive fine-tuning on
# the second half *raised* next-byte accuracy on the first (0.466 → 0.474), so nothing is
# forgotten and strategies cannot be told apart. The codec modules of `encodings` (mapping
# tables of hex codes and Unicode character names; CPython cannot start without them) are
# another distribution: after 750 steps on them the code half fell to 0.395 (seeds 0–2; README).
CODE = ('email', 'json', 'http', 'urllib', 'xml', 'html')
CODE_THEN_CODECS = {'code': CODE, 'codecs': ('encodings',)}
TINY_CODE_THEN_CODECS = {'code': ('json',), 'codecs': tuple(
    f'encodings/{m}.py' for m in ('cp1252', 'cp437', 'mac_roman', 'cp850'))}
STDLIB_HALVES = {'stdlib_a': CODE,
                 'stdlib_b': ('asyncio', 'concurrent', 'multiprocessing', 'unittest')}
TINY_STDLIB_HALVES = {'stdlib_a': ('json',), 'stdlib_b': ('html',)}


def stdlib_task_fields(corpora: dict[str, tuple[str, ...]]) -> dict[str, dict]:
  """task_fields for a byte LM per corpus: {key: {'name': 'byte_lm', 'data_paths'}}, each
  corpus's paths taken inside the running Python's standard library."""
  import os
  import sysconfig
  root = sysconfig.get_paths()['stdlib']
  return {key: {'name': 'byte_lm', 'data_paths': ','.join(os.path.join(root, p) for p in paths)}
          for key, paths in corpora.items()}


def stdlib_halves(variant: str = '') -> dict[str, dict]:
  """Two halves of the standard library's code (STDLIB_HALVES; tiny: two small packages)."""
  return stdlib_task_fields(TINY_STDLIB_HALVES if variant == 'tiny' else STDLIB_HALVES)


def stdlib_code_then_codecs(variant: str = '') -> dict[str, dict]:
  """Code, then the codec tables of `encodings` (CODE_THEN_CODECS; tiny: a few files)."""
  return stdlib_task_fields(TINY_CODE_THEN_CODECS if variant == 'tiny' else CODE_THEN_CODECS)
