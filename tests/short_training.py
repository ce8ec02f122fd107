"""A minimal copy-task training loop for model tests (the real trainer lives in memflax.train)."""

from __future__ import annotations

import jax
import optax

from memflax.tasks.copy import Task


def train_copy(model, *, steps: int = 300, batch_size: int = 16, max_length: int = 5,
               learning_rate: float = 3e-3, seed: int = 0) -> tuple[float, float]:
  """Trains `model` (memflax.models interface) on short copy sequences.

  Returns (mean loss of the first 10 steps, mean loss of the last 10 steps).
  """
  task = Task(num_bits=8, min_length=1, max_length=max_length)
  init_key, data_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  probe = task.make_batch(data_key, batch_size)
  params = model.init({'params': init_key, 'dropout': dropout_key}, probe['inputs'])['params']
  optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, i):
    batch = task.make_batch(jax.random.fold_in(data_key, i), batch_size)

    def loss_fn(p):
      logits, _ = model.apply({'params': p}, batch['inputs'], train=True,
                              rngs={'dropout': jax.random.fold_in(dropout_key, i)})
      return task.loss_and_metrics(logits, batch)[0]

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, i)
    losses.append(loss)
  losses = [float(x) for x in jax.device_get(losses)]
  return sum(losses[:10]) / 10, sum(losses[-10:]) / 10
