"""Validation of a run's config before anything is compiled or written.

Every problem becomes one `ConfigError` whose message is a single line naming the
field, so the entry points can print it and exit without a traceback.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp

from memflax import extensions, models, tasks
from memflax.curriculum import KINDS

OPTIMIZERS = ('adam', 'rmsprop')
SCHEDULES = ('constant', 'cosine')


class ConfigError(ValueError):
  """A config field has an unknown name or a value the run cannot use."""


def _fields(cls) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)}


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _check_section(section, name: str, known: set[str], what: str,
                   zero_allowed: tuple[str, ...] = ()) -> None:
  """zero_allowed: size fields where 0 means 'switched off' (a class's `ZERO_ALLOWED`)."""
  unknown = sorted(set(section.keys()) - known - {'name'})
  _require(not unknown, f'unknown {what} field(s) {unknown} for {what}.name={name!r}; '
           f'known: {sorted(known)}')
  for key, value in section.items():
    # Sizes and counts: every int field named like one must be a positive int.
    if key.endswith(('_size', '_width', '_heads', '_layers', '_length', '_bits', '_slots')) \
        or key.startswith('num_'):
      # (below 2**31: shapes and indices are int32; larger ones overflow while tracing)
      low, word = (0, 'non-negative') if key in zero_allowed else (1, 'positive')
      _require(isinstance(value, int) and not isinstance(value, bool) and low <= value < 2**31,
               f'{what}.{key} must be a {word} integer (below 2**31), got {value!r}')
  if 'shift_range' in section:  # 2·shift_range + 1 rolls per head and step, traced one by one
    value, slots = section['shift_range'], section.get('memory_size')
    _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value
             and (not isinstance(slots, int) or value <= slots),
             f'{what}.shift_range must be an integer in [0, {what}.memory_size={slots}], '
             f'got {value!r}')


def validate(config, num_devices: int) -> None:
  """Raises ConfigError on the first problem; returns None when the config is usable."""
  for section, package in (('model', models), ('task', tasks)):
    name = config[section].get('name')
    _require(isinstance(name, str) and (name in package.available()
                                        or extensions.is_external(name)),
             f'{section}.name must be one of {package.available()} or a dotted path to your '
             f'own module (my_{section}s.my_{section}), got {name!r}')
  try:
    model_cls = models.model_class(config.model.name)
  except ValueError as e:
    raise ConfigError(str(e).splitlines()[0]) from None
  _check_section(config.model, config.model.name, _fields(model_cls) - {'output_size',
                                                                          'parent', 'name'},
                 'model', getattr(model_cls, 'ZERO_ALLOWED', ()))
  try:
    task = tasks.build(config.task)
  except (TypeError, ValueError, OverflowError) as e:
    message = str(e).splitlines()[0]
    raise ConfigError(message if message.startswith('task.') else f'task: {message}') from None
  _check_section(config.task, config.task.name, _fields(type(task)), 'task')
  if hasattr(task, 'min_length'):
    _require(task.min_length <= task.max_length,
             f'task.min_length ({task.min_length}) exceeds task.max_length ({task.max_length})')

  buckets = config.length_buckets
  _require(isinstance(buckets, int) and buckets >= 1,
           f'length_buckets must be an integer >= 1, got {buckets!r}')
  _require(buckets == 1 or hasattr(task, 'bucket_fields'),
           f'length_buckets={buckets} needs a task with a length or size range; task '
           f'{config.task.name!r} has none (use length_buckets=1)')

  curriculum = config.curriculum
  _require(curriculum.kind in KINDS,
           f'curriculum.kind must be one of {KINDS}, got {curriculum.kind!r}')
  if curriculum.kind == 'grow':
    _require(hasattr(task, 'curriculum_field'),
             f'curriculum.kind=grow needs a task with a size range to grow; task '
             f'{config.task.name!r} has none')
    _require(isinstance(curriculum.start, int) and curriculum.start >= 1,
             f'curriculum.start must be an integer >= 1, got {curriculum.start!r}')
    _require(isinstance(curriculum.increment, int) and curriculum.increment >= 1,
             f'curriculum.increment must be an integer >= 1, got {curriculum.increment!r}')
    _require(isinstance(curriculum.min_steps, int) and curriculum.min_steps >= 1,
             f'curriculum.min_steps must be an integer >= 1, got {curriculum.min_steps!r}')
    _require(0 <= curriculum.decay < 1,
             f'curriculum.decay must be in [0, 1), got {curriculum.decay}')

  _require(isinstance(config.seed, int) and not isinstance(config.seed, bool)
           and -2**63 <= config.seed < 2**63,  # what jax.random.PRNGKey accepts
           f'seed must be an integer in [-2**63, 2**63), got {config.seed!r}')
  for key in ('batch_size', 'num_train_steps', 'checkpoint_every_steps', 'eval_every_steps',
              'log_every_steps', 'keep_checkpoints'):
    value = config[key]
    lowest = 0 if key == 'num_train_steps' else 1
    # (below 2**31: the step counter is int32; a larger batch fails in jax.random)
    _require(isinstance(value, int) and not isinstance(value, bool) and lowest <= value < 2**31,
             f'{key} must be an integer >= {lowest} (and below 2**31), got {value!r}')
  for key in ('progress', 'tensorboard', 'images'):
    _require(isinstance(config.log[key], bool),
             f'log.{key} must be true or false, got {config.log[key]!r}')
  _require(isinstance(config.skip_nonfinite_updates, bool),
           f'skip_nonfinite_updates must be true or false, got {config.skip_nonfinite_updates!r}')
  _require(isinstance(config.debug.nan_grads_at_step, int)
           and not isinstance(config.debug.nan_grads_at_step, bool)
           and config.debug.nan_grads_at_step >= 0,
           f'debug.nan_grads_at_step must be an integer >= 0, got '
           f'{config.debug.nan_grads_at_step!r}')
  _require(isinstance(config.debug.nan_grads_leaf, str),
           f'debug.nan_grads_leaf must be a string, got {config.debug.nan_grads_leaf!r}')
  _require(config.learning_rate > 0, f'learning_rate must be > 0, got {config.learning_rate}')
  _require(config.grad_clip_norm >= 0, f'grad_clip_norm must be >= 0, got {config.grad_clip_norm}')
  _require(config.grad_clip_value >= 0,
           f'grad_clip_value must be >= 0, got {config.grad_clip_value}')
  _require(config.lr_schedule in SCHEDULES,
           f'lr_schedule must be one of {SCHEDULES}, got {config.lr_schedule!r}')
  _require(isinstance(config.lr_warmup_steps, int) and config.lr_warmup_steps >= 0,
           f'lr_warmup_steps must be an integer >= 0, got {config.lr_warmup_steps!r}')
  _require(0 <= config.lr_final_fraction <= 1,
           f'lr_final_fraction must be in [0, 1], got {config.lr_final_fraction}')
  _require(0 < config.adam_b2 < 1, f'adam_b2 must be in (0, 1), got {config.adam_b2}')
  _require(config.adam_eps > 0, f'adam_eps must be > 0, got {config.adam_eps}')
  _require(config.optimizer in OPTIMIZERS,
           f'optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}')
  _require(config.batch_size % num_devices == 0,
           f'batch_size {config.batch_size} is not divisible by the device count {num_devices}')
  _require(0 < config.eval.num_sequences < 2**31
           and config.eval.num_sequences % num_devices == 0,
           f'eval.num_sequences {config.eval.num_sequences} must be a positive multiple of '
           f'the device count {num_devices} (below 2**31)')
  _require(all(isinstance(n, int) and n > 0 for n in config.eval.lengths),
           f'eval.lengths must be positive integers, got {tuple(config.eval.lengths)}')

  # Tracing init abstractly (no compilation, no memory) surfaces value errors the
  # model itself raises, e.g. an unknown memory_init, with the model's own message.
  model = models.build(config.model, task.output_size)
  probe = jax.ShapeDtypeStruct((1, 3, task.input_size), jnp.float32)
  try:
    with warnings.catch_warnings():  # the probe's warnings (e.g. casts of huge values) would
      warnings.simplefilter('ignore')  # add lines to the one error line or precede training
      variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), probe)
  except (ValueError, TypeError, OverflowError) as e:
    message = str(e).splitlines()[0]
    # Model errors usually name their field already (model.memory_init ...).
    raise ConfigError(message if message.startswith('model.') else f'model: {message}') from None
  if config.debug.nan_grads_at_step:
    paths = parameter_paths(variables['params'])
    _require(any(config.debug.nan_grads_leaf in p for p in paths),
             f'debug.nan_grads_leaf={config.debug.nan_grads_leaf!r} names no parameter; '
             f'parameters: {paths}')


def parameter_paths(params) -> list[str]:
  """Each parameter leaf's path as printed in messages, e.g. "['controller']['kernel']"."""
  return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
