"""Validation of a run's config before anything is compiled or written.

Every problem becomes one `ConfigError` whose message is a single line naming the
field, so the entry points can print it and exit without a traceback.
"""

from __future__ import annotations

import dataclasses

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


def _check_section(section, name: str, known: set[str], what: str) -> None:
  unknown = sorted(set(section.keys()) - known - {'name'})
  _require(not unknown, f'unknown {what} field(s) {unknown} for {what}.name={name!r}; '
           f'known: {sorted(known)}')
  for key, value in section.items():
    # Sizes and counts: every int field named like one must be a positive int.
    if key.endswith(('_size', '_width', '_heads', '_layers', '_length', '_bits', '_slots')) \
        or key.startswith('num_'):
      _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
               f'{what}.{key} must be a positive integer, got {value!r}')


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
                 'model')
  try:
    task = tasks.build(config.task)
  except (TypeError, ValueError) as e:
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

  for key in ('batch_size', 'num_train_steps', 'checkpoint_every_steps', 'eval_every_steps',
              'log_every_steps', 'keep_checkpoints'):
    value = config[key]
    lowest = 0 if key == 'num_train_steps' else 1
    _require(isinstance(value, int) and value >= lowest,
             f'{key} must be an integer >= {lowest}, got {value!r}')
  for key in ('progress', 'tensorboard', 'images'):
    _require(isinstance(config.log[key], bool),
             f'log.{key} must be true or false, got {config.log[key]!r}')
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
  _require(config.optimizer in OPTIMIZERS,
           f'optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}')
  _require(config.batch_size % num_devices == 0,
           f'batch_size {config.batch_size} is not divisible by the device count {num_devices}')
  _require(config.eval.num_sequences > 0 and config.eval.num_sequences % num_devices == 0,
           f'eval.num_sequences {config.eval.num_sequences} must be a positive multiple of '
           f'the device count {num_devices}')
  _require(all(isinstance(n, int) and n > 0 for n in config.eval.lengths),
           f'eval.lengths must be positive integers, got {tuple(config.eval.lengths)}')

  # Tracing init abstractly (no compilation, no memory) surfaces value errors the
  # model itself raises, e.g. an unknown memory_init, with the model's own message.
  model = models.build(config.model, task.output_size)
  probe = jax.ShapeDtypeStruct((1, 3, task.input_size), jnp.float32)
  try:
    jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), probe)
  except (ValueError, TypeError) as e:
    message = str(e).splitlines()[0]
    # Model errors usually name their field already (model.memory_init ...).
    raise ConfigError(message if message.startswith('model.') else f'model: {message}') from None
