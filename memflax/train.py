"""The one training loop: `train_and_evaluate(config, workdir) -> TrainState`.

Order of business: validate the config and the workdir (nothing compiled or
written before both pass) → mesh → model/task/optimizer → restore or init →
compile the step once → loop, syncing with the host only at log, eval and
checkpoint steps.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from memflax import config_checks, cpu_cores, models, parallel, preemption, progress_log
from memflax import tasks, tracing
from memflax import curriculum as curriculum_lib
from memflax import length_buckets
from memflax import workdir as workdir_lib
from memflax.checkpoint import Checkpointer, check_compatible
from memflax.data import document_stream
from memflax.data.from_config import corpus_for
from memflax.metric_writer import MetricWriter
from memflax.tensorboard_log import TensorBoardLog


# How far the host may dispatch ahead of the devices. Unbounded, a fast host queues
# dozens of steps; with several CPU devices in one process XLA then parks its
# client threads on the per-device in-flight limit while launching later steps,
# leaving no thread to run some devices' part of the current step, whose
# all-reduce waits for them until XLA aborts (measured: 8 fake devices, full-size
# NTM, aborted in 3 of 4 runs of 600 steps; none with this bound). Two steps keep
# the devices busy while the host prepares the next.
MAX_STEPS_IN_FLIGHT = 2


class DispatchWindow:
  """Lets the host run at most `limit` steps (MAX_STEPS_IN_FLIGHT; None: no bound) ahead
  of the devices: `add` each step's output as it is dispatched; it waits on the oldest
  beyond the bound (waits on device; copies nothing)."""

  def __init__(self, limit: int | None = MAX_STEPS_IN_FLIGHT):
    self._queue = collections.deque()
    self._limit = limit

  def add(self, output) -> None:
    if self._limit is None:
      return
    self._queue.append(output)
    if len(self._queue) > self._limit:
      jax.block_until_ready(self._queue.popleft())


class NonFiniteError(RuntimeError):
  """Loss, gradients or parameters became NaN/inf; the run stops and keeps its last good checkpoint."""


# nonfinite_at[1]: where a step first went non-finite.
NONFINITE_LOSS, NONFINITE_GRADIENT, NONFINITE_PARAMETER = 0, 1, 2


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `nonfinite` latches once a step produced
  NaN/inf; from then on steps leave the state unchanged so the host can stop at its
  next sync point without a corrupted state ever reaching a checkpoint. `nonfinite_at`
  = (step, NONFINITE_*, leaf index) of that first step, for the error message; with
  `skip_nonfinite_updates` such steps are skipped instead and counted in
  `skipped_updates`."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  nonfinite: jax.Array
  nonfinite_at: jax.Array   # int32 [3]; -1s until a step goes non-finite
  skipped_updates: jax.Array
  curriculum: dict  # memflax.curriculum state (constant when curriculum.kind is 'fixed')


@flax.struct.dataclass
class MemoryTrainState(TrainState):
  """The state of a model with an external store (the flax collection 'memory', e.g.
  memflax.models.knn_transformer): the store is carried from step to step, split over
  devices by batch row like the batch itself, and checkpointed with the rest. A separate
  class, so the checkpoints of models without a store keep their layout."""

  memory: Any = None


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
    opt = optax.adam(lr, b2=config.adam_b2, eps=config.adam_eps)
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

  def __init__(self, config, data=None, task=None, regulariser=None, initial_params=None):
    """task: a Task object used instead of `tasks.build(config.task)` (continual learning
    passes a padded wrapper, memflax.continual.padded). regulariser: None, or
    `(model, params, step, device) -> (penalty scalar, {name: scalar})`, added to the loss
    of every step (strategies of memflax.continual.strategies). initial_params: a params
    pytree that init_state starts from instead of a fresh initialisation (the previous
    task's snapshot); the optimizer state is initialised fresh for it."""
    self.config = config
    self.mesh = parallel.make_mesh(cpu_cores.run_devices(config))
    self.task = task if task is not None else tasks.build(config.task)
    self.regulariser = regulariser
    self.initial_params = initial_params
    # Host-fed tasks (text) read their batches from a dataset; the rest make them on device.
    self.host_fed = getattr(self.task, 'host_fed', False)
    self.growing = config.curriculum.kind == 'grow'  # a curriculum caps training sizes
    # make_batch overrides per compiled training shape; None: one shape. A growing
    # curriculum's cap lives on device, where the host cannot pick buckets by it.
    self.buckets = None if self.growing or self.host_fed else length_buckets.task_buckets(
        self.task, config.length_buckets)
    self.data = (data if data is not None else corpus_for(config)) if self.host_fed else None
    # Document lanes (memflax.data.document_stream): row b reads its documents segment
    # after segment, for models that carry a store from one segment to the next.
    self.streams = getattr(self.task, 'stream_documents', False)
    self.lanes = document_stream.DocumentLanes(self.data, 'train', self.task.seq_length) \
        if self.streams else None
    self.model = models.build(config.model, self.task.output_size)
    self.optimizer = make_optimizer(config)
    root = jax.random.PRNGKey(config.seed)
    self.init_key, self.data_key, self.dropout_key, self.eval_key = jax.random.split(root, 4)
    self._replicated = parallel.replicated(self.mesh)
    self._batch_sharded = parallel.batch_sharded(self.mesh)
    self._sums = None  # compiled on first use by validation_metrics
    self._validation_lanes = None  # built on first use by validation_lanes
    self._empty_eval_memory = None
    with warnings.catch_warnings():  # as config_checks' probe: casts of huge config values
      warnings.simplefilter('ignore')  # warn, and must not print before the run's first line
      self.has_memory = 'memory' in jax.eval_shape(
          lambda: self.model.init(self.init_key, self._probe(1)))

  def _probe(self, batch_size: int) -> jax.Array:
    """Zero model inputs of a batch's shape (parameters and stores depend on shapes only)."""
    probe = jax.eval_shape(lambda: self.task.make_batch(self.data_key, batch_size)['inputs'])
    return jnp.zeros(probe.shape, probe.dtype)

  def empty_memory(self, batch_size: int):
    """The model's external store for `batch_size` rows, empty (all zeros); None for models
    without one. Traceable: inside a per-device function, pass the local batch size."""
    if not self.has_memory:
      return None
    shapes = jax.eval_shape(lambda: self.model.init(self.init_key, self._probe(batch_size)))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['memory'])

  def apply_model(self, params, memory, inputs, reset=None, **kwargs):
    """-> (logits, traces, memory after the call). With a store, rows whose `reset` is
    True start empty (default: every row, for tasks whose sequences are independent)."""
    if not self.has_memory:
      logits, traces = self.model.apply({'params': params}, inputs, **kwargs)
      return logits, traces, None
    if reset is None:
      reset = jnp.ones(inputs.shape[:1], bool)
    (logits, traces), updated = self.model.apply({'params': params, 'memory': memory}, inputs,
                                                 reset=reset, mutable=['memory'], **kwargs)
    return logits, traces, updated['memory']

  def state_shardings(self):
    """Shardings of the TrainState: replicated, except a store's rows split like the batch."""
    if not self.has_memory:
      return self._replicated
    fields = {f.name: self._replicated for f in dataclasses.fields(TrainState)}
    return MemoryTrainState(**fields, memory=self._batch_sharded)

  # ---------------------------------------------------------------- State
  def init_state(self) -> TrainState:
    @functools.partial(jax.jit, out_shardings=self.state_shardings())
    def init():
      params = self.model.init(self.init_key, self._probe(1))['params']
      if self.initial_params is not None:  # same structure by construction (continual runner checks)
        params = jax.tree.map(lambda p, q: jnp.asarray(q, p.dtype), params, self.initial_params)
      fields = dict(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=self.optimizer.init(params), rng=self.dropout_key,
                    nonfinite=jnp.zeros((), bool), nonfinite_at=jnp.full((3,), -1, jnp.int32),
                    skipped_updates=jnp.zeros((), jnp.int32),
                    curriculum=curriculum_lib.initial_state(self.config))
      if self.has_memory:
        return MemoryTrainState(**fields, memory=self.empty_memory(self.config.batch_size))
      return TrainState(**fields)
    return init()

  def abstract_state(self) -> TrainState:
    shapes = jax.eval_shape(self.init_state)
    # state_shardings() is a prefix of the state's tree: give each leaf its node's sharding.
    shardings = jax.tree.map(lambda sharding, node: jax.tree.map(lambda _: sharding, node),
                             self.state_shardings(), shapes,
                             is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                  sharding=sharding),
                        shapes, shardings)

  # ---------------------------------------------------------------- Update step
  def _per_device_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One update on this device's slice of the batch; gradients averaged over `data`."""
    device = jax.lax.axis_index(parallel.DATA_AXIS)
    dropout_rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), device)

    memory = getattr(state, 'memory', None)

    def loss_fn(params):
      logits, _, new_memory = self.apply_model(params, memory, batch['inputs'],
                                               batch.get('reset'), train=True,
                                               rngs={'dropout': dropout_rng})
      loss, metrics = self.task.loss_and_metrics(logits, batch)
      if self.regulariser is not None:  # continual-learning penalty or replay term
        penalty, extra = self.regulariser(self.model, params, state.step, device)
        loss = loss + penalty
        metrics = {**metrics, **extra, 'task_loss': metrics['loss'], 'loss': loss}
      return loss, (metrics, new_memory)

    (_, (metrics, new_memory)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, parallel.DATA_AXIS)
    grads = self._inject_nan(grads, state.step + 1)
    metrics = jax.lax.pmean(metrics, parallel.DATA_AXIS)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)

    # One flag per leaf, so the host can name the first bad one without a device copy.
    # They are worked out only when a norm says something is off (a NaN or inf in any
    # leaf makes its tree's norm non-finite): at batch 1 the two dozen per-leaf
    # reductions were a sixth of a short step's fixed cost.
    num_grads, num_params = len(jax.tree.leaves(grads)), len(jax.tree.leaves(params))

    def leaf_flags(_):
      return (jnp.stack([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]),
              jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(params)]))

    def all_finite(_):
      return jnp.ones(num_grads, bool), jnp.ones(num_params, bool)

    norms_finite = jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(params))
    finite_grads, finite_params = jax.lax.cond(norms_finite, all_finite, leaf_flags, None)
    finite_loss = jnp.isfinite(metrics['loss'])
    step_bad = ~(finite_loss & finite_grads.all() & finite_params.all())
    where = jnp.where(~finite_grads.all(), NONFINITE_GRADIENT,
                      jnp.where(~finite_params.all(), NONFINITE_PARAMETER, NONFINITE_LOSS))
    leaf = jnp.where(where == NONFINITE_GRADIENT, jnp.argmin(finite_grads),
                     jnp.where(where == NONFINITE_PARAMETER, jnp.argmin(finite_params), -1))
    first = step_bad & (state.nonfinite_at[0] < 0)
    nonfinite_at = jnp.where(first, jnp.stack([state.step + 1, where, leaf]).astype(jnp.int32),
                             state.nonfinite_at)
    skip = self.config.skip_nonfinite_updates
    # skip: a bad step leaves params and optimizer state as they were, the run goes on.
    bad = step_bad if skip else state.nonfinite | step_bad
    keep = functools.partial(jax.tree.map, lambda old, new: jnp.where(bad, old, new))
    curriculum = state.curriculum
    if self.growing:  # metrics are pmean'd, so every device grows alike
      metrics['curriculum_level'] = state.curriculum['level']
      curriculum = curriculum_lib.update(
          curriculum, metrics[self.task.primary_metric], self.config,
          self.task.higher_is_better, getattr(self.task, self.task.curriculum_field))
    skipped = state.skipped_updates + step_bad.astype(jnp.int32) if skip else \
        state.skipped_updates
    new_state = state.replace(step=state.step + 1 if skip else
                              jnp.where(bad, state.step, state.step + 1),
                              params=keep(state.params, params),
                              opt_state=keep(state.opt_state, opt_state),
                              nonfinite=state.nonfinite if skip else bad,
                              nonfinite_at=nonfinite_at, skipped_updates=skipped,
                              curriculum=keep(state.curriculum, curriculum))
    if self.has_memory:  # a step that is thrown away does not write to the store either
      new_state = new_state.replace(memory=keep(memory, new_memory))
    metrics.update(grad_norm=grad_norm, param_norm=optax.tree.norm(new_state.params),
                   nonfinite=new_state.nonfinite, nonfinite_at=nonfinite_at)
    if skip:
      metrics['skipped_updates'] = skipped
    return new_state, metrics

  def _inject_nan(self, grads, step: jax.Array):
    """debug.nan_grads_at_step: that step's gradients become NaN in the parameters whose
    path contains debug.nan_grads_leaf (validated to name one), to exercise the handling."""
    at, name = self.config.debug.nan_grads_at_step, self.config.debug.nan_grads_leaf
    if not at:
      return grads
    def poison(path, g):
      if name not in jax.tree_util.keystr(path):
        return g
      return jnp.where(step == at, jnp.full_like(g, jnp.nan), g)
    return jax.tree_util.tree_map_with_path(poison, grads)

  def make_train_step(self):
    """(state, *step_inputs(state.step), bucket=step_bucket(state.step)) -> (state, metrics).

    The batch of step s is a pure function of (seed, s): made on device from
    fold_in(data_key, s) (within bucket `bucket`'s sizes, a static argument, when the
    run uses length buckets), or, for host-fed tasks, from the bytes the host read for s.
    """
    if self.has_memory:  # the store travels beside the replicated state, split by rows
      def per_device(state, memory, batch):
        new_state, metrics = self._per_device_step(state.replace(memory=memory), batch)
        return new_state.replace(memory=None), new_state.memory, metrics
      rows = jax.sharding.PartitionSpec(parallel.DATA_AXIS)
      replicated = jax.sharding.PartitionSpec()
      split_step = parallel.data_parallel(per_device, self.mesh,
                                          in_specs=(replicated, rows, rows),
                                          out_specs=(replicated, rows, replicated))

      def sharded_step(state, batch):
        new_state, memory, metrics = split_step(state.replace(memory=None), state.memory, batch)
        return new_state.replace(memory=memory), metrics
    else:
      sharded_step = parallel.data_parallel(self._per_device_step, self.mesh)

    @functools.partial(jax.jit, donate_argnums=0, static_argnames='bucket')
    def train_step(state, *tokens, bucket=None):
      if self.streams:
        tokens, lengths, reset = tokens
        batch = self.task.batch_from_tokens(tokens, lengths=lengths, reset=reset)
      elif not tokens:
        level = {'level': state.curriculum['level']} if self.growing else {}
        sizes = self.buckets[bucket] if bucket is not None else {}
        batch = self.task.make_batch(jax.random.fold_in(self.data_key, state.step),
                                     self.config.batch_size, **level, **sizes)
      else:
        batch = self.task.batch_from_tokens(*tokens)
      batch = jax.lax.with_sharding_constraint(batch, self._batch_sharded)
      return sharded_step(state, batch)

    return train_step

  def step_bucket(self, step: int) -> int | None:
    """Which length bucket step `step` (0-based) trains on; None without buckets."""
    if self.buckets is None:
      return None
    return length_buckets.bucket_of_step(self.config.seed, step, self.buckets)

  def compile_train_steps(self, state: TrainState, step: int) -> dict:
    """{bucket: compiled train step} for every training shape (key None without
    buckets); call as steps[step_bucket(s)](state, *step_inputs(s))."""
    train_step = self.make_train_step().lower
    inputs = self.step_inputs(step)
    if self.buckets is None:
      return {None: train_step(state, *inputs).compile()}
    return {b: train_step(state, *inputs, bucket=b).compile() for b in range(len(self.buckets))}

  def step_inputs(self, step: int) -> tuple:
    """What train_step needs besides the state to take step `step` (0-based): nothing,
    or this process's rows of the step's corpus windows as one global array."""
    if not self.host_fed:
      return ()
    if self.streams:
      rows = self.lanes.batch_for_step(self.config.seed, step, self.config.batch_size,
                                       jax.process_index(), jax.process_count())
      return tuple(parallel.global_batch(r, self.mesh) for r in rows)
    rows = self.data.batch_for_step(self.config.seed, step, self.config.batch_size,
                                    self.task.seq_length, jax.process_index(),
                                    jax.process_count())
    return (parallel.global_batch(rows, self.mesh),)

  def make_eval_step(self, num_sequences: int, key: jax.Array, **batch_kwargs):
    """params -> mean metrics over `num_sequences` fixed sequences drawn from `key`.

    `batch_kwargs` go to `task.make_batch` (e.g. min_length/max_length for a
    length-generalisation probe).
    """

    def per_device(params, batch):
      memory = self.empty_memory(batch['inputs'].shape[0])
      logits, _, _ = self.apply_model(params, memory, batch['inputs'])
      return jax.lax.pmean(self.task.loss_and_metrics(logits, batch)[1], parallel.DATA_AXIS)

    sharded = parallel.data_parallel(per_device, self.mesh,
                                     out_specs=jax.sharding.PartitionSpec())

    @jax.jit
    def eval_step(params):
      batch = self.task.make_batch(key, num_sequences, **batch_kwargs)
      return sharded(params, jax.lax.with_sharding_constraint(batch, self._batch_sharded))

    return eval_step

  def make_evaluator(self, num_sequences: int, params):
    """params -> {metric: float} on `num_sequences` fixed held-out sequences: drawn from
    eval_key, or for host-fed tasks the first windows of the validation split. Compiled
    ahead for `params`' shapes where the batch is made on device."""
    if not self.host_fed:
      step = self.make_eval_step(num_sequences, self.eval_key).lower(params).compile()
      return lambda params: {k: float(v) for k, v in jax.device_get(step(params)).items()}
    return functools.partial(self.validation_metrics, max_windows=num_sequences)

  def validation_metrics(self, params, max_windows: int | None = None) -> dict[str, float]:
    """See _window_metrics (random-access windows) and _stream_metrics (document lanes)."""
    if self.streams:
      return self._stream_metrics(params, max_windows)
    return self._window_metrics(params, max_windows)

  def validation_lanes(self, max_windows: int | None = None):
    """The validation documents on lanes (memflax.data.document_stream; all of them, or the
    first that make up `max_windows` segments), step by step: yields ((tokens, lengths,
    reset) as global arrays of this process's rows, number of rows scored). The caller
    carries the store, starting from empty_validation_memory()."""
    if self._validation_lanes is None:
      self._validation_lanes = document_stream.DocumentLanes(self.data, 'validation',
                                                             self.task.seq_length)
    lanes, size = self._validation_lanes, self.config.batch_size
    per = size // jax.process_count()
    mine = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
    for tokens, lengths, reset in lanes.validation_steps(size, lanes.documents_for(max_windows),
                                                         self.task.eval_piece_segments):
      yield (tuple(parallel.global_batch(x[mine], self.mesh) for x in (tokens, lengths, reset)),
             int(np.count_nonzero(lengths)))

  def empty_validation_memory(self):
    """An empty store for validation_lanes' batches, split by rows (None without a store);
    compiled once per Trainer, not at every evaluation."""
    if self._empty_eval_memory is None:
      self._empty_eval_memory = jax.jit(
          lambda: self.empty_memory(self.config.batch_size),
          out_shardings=self._batch_sharded if self.has_memory else None)
    return self._empty_eval_memory()

  def _stream_metrics(self, params, max_windows: int | None = None) -> dict[str, float]:
    """Validation documents read lane by lane from an empty store, each target byte once:
    every document, or (while training) the first documents until `max_windows` segments
    are planned. Same keys as _window_metrics; num_windows counts segments."""
    if self._sums is None:
      def sums(params, memory, tokens, lengths, reset):
        batch = self.task.batch_from_tokens(tokens, lengths=lengths, reset=reset)
        logits, _, memory = self.apply_model(params, memory, batch['inputs'], batch['reset'])
        hits = (jnp.argmax(logits, -1) == batch['targets']) * batch['mask']
        return (jnp.sum(self.task.token_losses(logits, batch)), jnp.sum(batch['mask']),
                jnp.sum(hits)), memory
      self._sums = jax.jit(sums, donate_argnums=1)
    totals, windows, memory = np.zeros(3), 0, self.empty_validation_memory()
    for batch, scored in self.validation_lanes(max_windows):
      out, memory = self._sums(params, memory, *batch)
      totals += np.asarray(jax.device_get(out), np.float64)
      windows += scored
    return _scored_means(totals, windows)

  def _window_metrics(self, params, max_windows: int | None = None) -> dict[str, float]:
    """Means over the validation split's windows in order (all of them, or the first
    `max_windows`), each target byte once: {'loss', 'bits_per_byte', 'accuracy',
    'num_windows'}."""
    if self._sums is None:
      def sums(params, tokens, row_mask):
        batch = self.task.batch_from_tokens(tokens, row_mask)
        memory = self.empty_memory(tokens.shape[0])
        logits, _, _ = self.apply_model(params, memory, batch['inputs'])
        hits = (jnp.argmax(logits, -1) == batch['targets']) * batch['mask']
        return (jnp.sum(self.task.token_losses(logits, batch)), jnp.sum(batch['mask']),
                jnp.sum(hits))
      self._sums = jax.jit(sums)
    size = self.config.batch_size
    per = size // jax.process_count()
    mine = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
    totals, windows = np.zeros(3), 0
    max_batches = None if max_windows is None else -(-max_windows // size)
    for tokens in self.data.validation_batches(size, self.task.seq_length, max_batches):
      rows = len(tokens)
      if max_windows is not None:
        rows = min(rows, max_windows - windows)
      # Pad a short last batch to the compiled shape; padded rows are masked out.
      padded = np.zeros((size, tokens.shape[1]), np.uint8)
      padded[:rows] = tokens[:rows]
      row_mask = (np.arange(size) < rows).astype(np.float32)
      out = self._sums(params, parallel.global_batch(padded[mine], self.mesh),
                       parallel.global_batch(row_mask[mine], self.mesh))
      totals += np.asarray(jax.device_get(out), np.float64)
      windows += rows
    return _scored_means(totals, windows)


def _scored_means(totals: np.ndarray, windows: int) -> dict[str, float]:
  """(summed nats, scored bytes, correct bytes) over `windows` windows -> the validation
  metrics {'loss', 'bits_per_byte', 'accuracy', 'num_windows'}."""
  nats, count, hits = totals
  loss = nats / max(count, 1.0)
  return dict(loss=loss, bits_per_byte=loss / math.log(2), accuracy=hits / max(count, 1.0),
              num_windows=windows)


# ------------------------------------------------------------------ Loop
def train_and_evaluate(config, workdir: str | Path) -> TrainState:
  """Trains `config` in `workdir`, resuming from its newest good checkpoint.

  Raises ConfigError / IncompatibleCheckpointError / WorkdirError before anything
  is compiled or written, NonFiniteError (after keeping the last good
  checkpoint) if the loss or gradients become NaN/inf, and preemption.Preempted
  after saving a checkpoint at the step reached when SIGTERM arrived.
  """
  workdir = workdir_lib.resolve(workdir)
  config_checks.validate(config, len(cpu_cores.run_devices(config)))
  config_dict = config_to_dict(config)
  check_compatible(workdir, config_dict)
  # A text corpus is built (or found) before the workdir is touched: a bad corpus
  # leaves nothing behind.
  data = corpus_for(config) if getattr(tasks.build(config.task), 'host_fed', False) else None

  trainer = Trainer(config, data)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdir_lib.RunLock(workdir, jax.process_index()), preemption.handling():
    return run_loop(trainer, config_dict, workdir)


def run_loop(trainer: Trainer, config_dict: dict, workdir: Path,
             description: str = '') -> TrainState:
  """The loop itself, for callers that build their own Trainer (memflax.continual runs one
  per task with a padded task, a regulariser and initial parameters). `workdir` must be
  resolved and validated, and held under a RunLock (its own, or, for a continual task, the
  sequence's); `config_dict` is what checkpoints store; `description` labels the progress
  bar (e.g. 'task 2/5')."""
  config = trainer.config
  is_main = jax.process_index() == 0
  writer = MetricWriter(workdir)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
  board = None
  try:
    restored = checkpointer.restore_newest(trainer.abstract_state())
    state, start, progress = restored if restored else (trainer.init_state(), 0, {})
    state = jax.block_until_ready(state)
    superseded = writer.discard_after(start)
    log = progress_log.ProgressLog(config.num_train_steps, start,
                                   enabled=is_main, bar=config.log.progress,
                                   description=description)
    board = TensorBoardLog(workdir, start, enabled=config.log.tensorboard)
    where = (f'resumed from step {start}' if restored else 'from scratch'
             if trainer.initial_params is None else 'from the given initial parameters')
    if superseded:
      where += f' ({superseded} metric rows past it moved to {MetricWriter.SUPERSEDED})'
    devices = trainer.mesh.devices.size
    log.line(f'memflax: {config.model.name} on {config.task.name}, {devices} '
             f'device(s), {jax.process_count()} process(es), {where}')
    written_on = progress.get('devices')
    if restored and written_on is not None and written_on != devices:
      # Gradients are averaged over a different split of the same global batch, so sums
      # run in another order: equal to float tolerance, not bit for bit.
      log.line(f'memflax: checkpoint at step {start} was written on {written_on} device(s); '
               f'this run has {devices}: same global batch, so losses match an '
               'uninterrupted run to float tolerance, not bit for bit')

    compile_start = time.perf_counter()
    train_steps = trainer.compile_train_steps(state, start)
    evaluate = trainer.make_evaluator(config.eval.num_sequences, state.params)
    tracer = _eval_tracer(trainer) if config.log.tensorboard and config.log.images else None
    if tracer is not None:
      tracer(state.params)  # compiled here, with the steps, not at the first evaluation
    compile_s = time.perf_counter() - compile_start
    writer.write(start, compile_s=compile_s)
    board.scalars(start, 'run', {'compile_s': compile_s})
    learning_rate = learning_rate_schedule(config)

    total = config.num_train_steps
    # Training wall clock carries over resumes (stored with each checkpoint).
    time_before = float(progress.get('train_time_s', 0.0))
    last_time, last_step, begin = time.perf_counter(), start, time.perf_counter()

    def train_time() -> float:
      return time_before + time.perf_counter() - begin

    last_eval = {}
    in_flight = DispatchWindow()
    def save(step: int) -> None:
      checkpointer.save(step, state, config_dict,
                        {'train_time_s': train_time(), 'devices': devices})

    for step in range(start + 1, total + 1):
      if _preemption_requested(step - 1, config):
        if checkpointer.latest_step() != step - 1:
          save(step - 1)
        checkpointer.wait()
        raise preemption.Preempted.at_step(step - 1, str(workdir))
      state, metrics = train_steps[trainer.step_bucket(step - 1)](
          state, *trainer.step_inputs(step - 1))
      in_flight.add(metrics)
      final = step == total
      log_now = step % config.log_every_steps == 0 or final
      save_now = step % config.checkpoint_every_steps == 0 or final
      if log_now or save_now:  # the only host syncs of the loop, besides evaluation
        host = jax.device_get(metrics)
        _stop_if_nonfinite(host, step, checkpointer, state.params)
      if log_now:
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        task_metrics = {k: v for k, v in host.items()
                        if k not in ('loss', 'grad_norm', 'param_norm', 'nonfinite', 'nonfinite_at')}
        row = dict(loss=host['loss'], **task_metrics, grad_norm=host['grad_norm'],
                   param_norm=host['param_norm'], learning_rate=float(learning_rate(step - 1)),
                   steps_per_sec=rate, sequences_per_sec=rate * config.batch_size)
        writer.write(step, **row, train_time_s=train_time())
        board.scalars(step, 'train', row)
        log.update(step, loss=float(host['loss']), steps_per_sec=rate)
      if step % config.eval_every_steps == 0 or final:
        last_eval = {f'eval_{k}': v for k, v in evaluate(state.params).items()}
        writer.write(step, **last_eval)
        log.event(step, last_eval)
        board.scalars(step, 'eval', {k[len('eval_'):]: v for k, v in last_eval.items()})
        if tracer is not None:
          board.trace_images(step, tracer(state.params))
        board.flush()
      if save_now:
        save(step)
    log.close()
  finally:
    checkpointer.close()
    if board is not None:
      board.close()
  if start < config.num_train_steps or not restored:
    log.line(progress_log.summary(config, workdir, start, train_time(), last_eval))
  else:
    log.line(f'memflax: {workdir} already holds the final checkpoint (step {start}); '
             'nothing to train')
  return state


def _eval_tracer(trainer: Trainer):
  """params -> trace of one fixed example for the TensorBoard images (weightings and memory
  where the model has them, target and output always); None for host-fed text and for
  multi-process runs (the single-example program would have to run on every process)."""
  if jax.process_count() > 1 or getattr(trainer.task, 'host_fed', False):
    return None
  return tracing.make_tracer(trainer, seed=trainer.config.seed)


def _preemption_requested(steps_done: int, config) -> bool:
  """Whether to stop for SIGTERM before the next step. One process checks every step; several
  must agree (a save is collective), so they compare flags at log and checkpoint steps."""
  if jax.process_count() == 1:
    return preemption.requested()
  if steps_done % config.log_every_steps and steps_done % config.checkpoint_every_steps:
    return False
  flags = multihost_utils.process_allgather(np.asarray(preemption.requested()))
  return bool(np.any(flags))


def _stop_if_nonfinite(host_metrics: dict, step: int, checkpointer: Checkpointer,
                       params) -> None:
  if not host_metrics['nonfinite']:
    return
  kept = checkpointer.latest_step()
  at_step, where, leaf = (int(x) for x in host_metrics['nonfinite_at'])
  if where == NONFINITE_LOSS:
    what = f'loss ({float(host_metrics["loss"])}) at step {at_step}'
  else:
    kind = 'gradient' if where == NONFINITE_GRADIENT else 'parameter after the update'
    what = (f'{kind} at step {at_step} (first non-finite leaf: '
            f'params{config_checks.parameter_paths(params)[leaf]})')
  raise NonFiniteError(
      f'non-finite {what}; stopped at step {step}, last good checkpoint: '
      f'{"none" if kept is None else f"step {kept}"} (to skip such steps instead: '
      '--config.skip_nonfinite_updates=true)')
