"""Curriculum: grow the task's size cap (e.g. copy's max_length) as training succeeds.

`curriculum.kind = 'fixed'` trains on the task's whole range from the start.
`'grow'` starts with sizes capped at `curriculum.start` and raises the cap by
`increment` whenever the running average of the training batches' headline metric
(bit errors per sequence, accuracy, ...) is better than `threshold` after at least
`min_steps` steps at the current cap, up to the task's own maximum. The state lives
in the train state on device, so it is checkpointed with it and a resumed run grows
exactly as an uninterrupted one; the padded sequence length never changes, so there
is one compiled step for every level.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ('fixed', 'grow')


def initial_state(config) -> dict:
  """{'level': int32 cap, 'average': float32 running metric, 'steps': int32 at this level}."""
  return dict(level=jnp.asarray(config.curriculum.start, jnp.int32),
              average=jnp.zeros((), jnp.float32), steps=jnp.zeros((), jnp.int32))


def update(state: dict, value: jax.Array, config, higher_is_better: bool, cap: int) -> dict:
  """The curriculum state after a training step whose batch scored `value` (pure)."""
  c = config.curriculum
  decay = jnp.float32(c.decay)
  steps = state['steps'] + 1
  average = decay * state['average'] + (1 - decay) * value
  running = average / (1 - decay ** steps.astype(jnp.float32))  # bias-corrected
  good = running >= c.threshold if higher_is_better else running <= c.threshold
  grow = good & (steps >= c.min_steps) & (state['level'] < cap)
  return dict(level=jnp.where(grow, jnp.minimum(state['level'] + c.increment, cap),
                              state['level']),
              average=jnp.where(grow, 0.0, average), steps=jnp.where(grow, 0, steps))
