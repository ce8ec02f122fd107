"""The one training loop: `train_and_evaluate(config, workdir) -> TrainState`.

Order of business: validate the config and the workdir (nothing compiled or
written before both pass) → mesh → model/task/optimizer → restore or init →
compile the step once → loop, syncing with the host only at log, eval and
checkpoint steps.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

from memflax import config_checks, models, parallel, tasks
from memflax.checkpoint import Checkpointer, check_compatible
from memflax.metric_writer import MetricWriter


class NonFiniteError(RuntimeError):
  """Loss, gradients or parameters became NaN/inf; the run stops and keeps its last good checkpoint."""


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `nonfinite` latches once a step produced
  NaN/inf; from then on steps leave the state unchanged so the host can stop at its
  next sync point without a corrupted state ever reaching a checkpoint."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite: jax.Array


def config_to_dict(config) -> dict:
  """The config as plain JSON types (tuples become lists), as stored in checkpoints."""
  return json.loads(config.to_json())


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then constant or cosine decay to
  `learning_rate · lr_final_fraction` at `num_train_steps`."""
  peak, warmup = config.learning_rate, config.lr_warmup_steps
  if config.lr_schedule == 'constant':
    decay = optax.constant_schedule(peak)
  else:
    decay = optax.cosine_decay_schedule(peak, max(config.num_train_steps - warmup, 1),
                                        alpha=config.lr_final_fraction)
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(config) -> optax.GradientTransformation:
  lr = learning_rate_schedule(config)
  if config.optimizer == 'adam':
    opt = optax.adam(lr, b2=config.adam_b2)
  else:  # rmsprop, with pytorch-ntm's momentum and decay
    opt = optax.rmsprop(lr, decay=0.95, momentum=0.9, centered=True)
  # Disabled clips stay in the chain as identities so the optimizer state has the
  # same structure whatever the clip settings: a resumed run may change them.
  return optax.chain(
      optax.clip(config.grad_clip_value) if config.grad_clip_value else optax.identity(),
      optax.clip_by_global_norm(config.grad_clip_norm) if config.grad_clip_norm
      else optax.identity(),
      opt)


class Trainer:
  """The compiled pieces of one run: model, task, optimizer, mesh, step functions."""

  def __init__(self, config):
    self.config = config
    self.mesh = parallel.make_mesh()
    self.task = tasks.build(config.task)
    self.model = models.build(config.model, self.task.output_size)
    self.optimizer = make_optimizer(config)
    root = jax.random.PRNGKey(config.seed)
    self.init_key, self.data_key, self.dropout_key, self.eval_key = jax.random.split(root, 4)
    self._replicated = parallel.replicated(self.mesh)
    self._batch_sharded = parallel.batch_sharded(self.mesh)

  # ---------------------------------------------------------------- State
  def init_state(self) -> TrainState:
    @functools.partial(jax.jit, out_shardings=self._replicated)
    def init():
      probe = self.task.make_batch(self.data_key, 1)['inputs']
      params = self.model.init(self.init_key, probe)['params']
      return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                        opt_state=self.optimizer.init(params), rng=self.dropout_key,
                        nonfinite=jnp.zeros((), bool))
    return init()

  def abstract_state(self) -> TrainState:
    shapes = jax.eval_shape(self.init_state)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._replicated), shapes)

  # ---------------------------------------------------------------- Update step
  def _per_device_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One update on this device's slice of the batch; gradients averaged over `data`."""
    device = jax.lax.axis_index(parallel.DATA_AXIS)
    dropout_rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), device)

    def loss_fn(params):
      logits, _ = self.model.apply({'params': params}, batch['inputs'], train=True,
                                   rngs={'dropout': dropout_rng})
      return self.task.loss_and_metrics(logits, batch)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, parallel.DATA_AXIS)
    metrics = jax.lax.pmean(metrics, parallel.DATA_AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)

    finite_params = jax.tree.reduce(jnp.logical_and,
                                    jax.tree.map(lambda p: jnp.isfinite(p).all(), params))
    bad = state.nonfinite | ~(jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)
                              & finite_params)
    keep = functools.partial(jax.tree.map, lambda old, new: jnp.where(bad, old, new))
    new_state = state.replace(step=jnp.where(bad, state.step, state.step + 1),
                              params=keep(state.params, params),
                              opt_state=keep(state.opt_state, opt_state), nonfinite=bad)
    metrics.update(grad_norm=grad_norm, param_norm=optax.tree.norm(new_state.params),
                   nonfinite=bad)
    return new_state, metrics

  def make_train_step(self):
    """state -> (state, metrics); the batch for step s is made on device from (seed, s)."""
    sharded_step = parallel.data_parallel(self._per_device_step, self.mesh)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state):
      batch = self.task.make_batch(jax.random.fold_in(self.data_key, state.step),
                                   self.config.batch_size)
      batch = jax.lax.with_sharding_constraint(batch, self._batch_sharded)
      return sharded_step(state, batch)

    return train_step

  def make_eval_step(self, num_sequences: int, key: jax.Array, **batch_kwargs):
    """params -> mean metrics over `num_sequences` fixed sequences drawn from `key`.

    `batch_kwargs` go to `task.make_batch` (e.g. min_length/max_length for a
    length-generalisation probe).
    """

    def per_device(params, batch):
      logits, _ = self.model.apply({'params': params}, batch['inputs'])
      return jax.lax.pmean(self.task.loss_and_metrics(logits, batch)[1], parallel.DATA_AXIS)

    sharded = parallel.data_parallel(per_device, self.mesh,
                                     out_specs=jax.sharding.PartitionSpec())

    @jax.jit
    def eval_step(params):
      batch = self.task.make_batch(key, num_sequences, **batch_kwargs)
      return sharded(params, jax.lax.with_sharding_constraint(batch, self._batch_sharded))

    return eval_step


# ------------------------------------------------------------------ Loop
def train_and_evaluate(config, workdir: str | Path) -> TrainState:
  """Trains `config` in `workdir`, resuming from its newest good checkpoint.

  Raises ConfigError / IncompatibleCheckpointError before anything is compiled
  or written, and NonFiniteError (after keeping the last good checkpoint) if the
  loss or gradients become NaN/inf.
  """
  workdir = Path(workdir)
  config_checks.validate(config, jax.device_count())
  config_dict = config_to_dict(config)
  check_compatible(workdir, config_dict)

  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  trainer = Trainer(config)
  writer = MetricWriter(workdir)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpointer.restore_newest(trainer.abstract_state())
    state, start = restored if restored else (trainer.init_state(), 0)
    # With several CPU devices in one process the first collective step has hung
    # (7 of 8 devices at the all-reduce) when launched while the state was still
    # being produced; starting from materialised buffers avoids that.
    state = jax.block_until_ready(state)
    if is_main:
      where = f'resumed from step {start}' if restored else 'from scratch'
      print(f'memflax: {config.model.name} on {config.task.name}, {jax.device_count()} '
            f'device(s), {jax.process_count()} process(es), {where}', flush=True)

    compile_start = time.perf_counter()
    train_step = trainer.make_train_step().lower(state).compile()
    eval_step = trainer.make_eval_step(config.eval.num_sequences,
                                       trainer.eval_key).lower(state.params).compile()
    writer.write(start, compile_s=time.perf_counter() - compile_start)

    total = config.num_train_steps
    bar = tqdm(total=total, initial=start, disable=not is_main, dynamic_ncols=True,
               file=sys.stdout, mininterval=1.0)
    last_time, last_step, begin = time.perf_counter(), start, time.perf_counter()
    for step in range(start + 1, total + 1):
      state, metrics = train_step(state)
      final = step == total
      log_now = step % config.log_every_steps == 0 or final
      save_now = step % config.checkpoint_every_steps == 0 or final
      if log_now or save_now:  # the only host syncs of the loop, besides evaluation
        host = jax.device_get(metrics)
        _stop_if_nonfinite(host, step, checkpointer)
      if log_now:
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        writer.write(step, loss=host['loss'], bit_errors_per_seq=host.get('bit_errors_per_seq'),
                     grad_norm=host['grad_norm'], param_norm=host['param_norm'],
                     steps_per_sec=rate, sequences_per_sec=rate * config.batch_size,
                     train_time_s=now - begin)
        bar.set_postfix_str(f'loss={float(host["loss"]):.4f} steps/s={rate:.1f}', refresh=False)
        bar.update(step - bar.n)
      if step % config.eval_every_steps == 0 or final:
        evaluation = jax.device_get(eval_step(state.params))
        writer.write(step, **{f'eval_{k}': v for k, v in evaluation.items()})
      if save_now:
        checkpointer.save(step, state, config_dict)
    bar.close()
  finally:
    checkpointer.close()
  return state


def _stop_if_nonfinite(host_metrics: dict, step: int, checkpointer: Checkpointer) -> None:
  if host_metrics['nonfinite']:
    kept = checkpointer.latest_step()
    raise NonFiniteError(
        f'non-finite loss, gradients or parameters by step {step} (loss={float(host_metrics["loss"])}, '
        f'grad_norm={float(host_metrics["grad_norm"])}); stopped, last good checkpoint: '
        f'{"none" if kept is None else f"step {kept}"}')
