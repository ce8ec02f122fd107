"""The NTM's training gradients are plain autodiff's.

Training differentiates the NTM through weight taps on its three kernels
(memflax/nn/weight_taps.py) and a remat policy that keeps a step's small values
(ntm.save_smaller_than); neither may change a loss or a gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.models import ntm, sparse_ntm

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.integers(0, 2, size=(3, 11, 9)), jnp.float32)
TARGET = jnp.asarray(RNG.normal(size=(3, 11, 8)).astype(np.float32))


def _loss(model, params, train):
  logits, _ = model.apply(params, X, train=train)
  return jnp.mean((logits - TARGET) ** 2)


@pytest.mark.parametrize('make', [
    lambda: ntm.Model(output_size=8, controller_size=16, memory_size=12, memory_width=6,
                      num_read_heads=2),
    lambda: ntm.Model(output_size=8, controller_size=16, memory_size=12, memory_width=6,
                      frobenius_norm=False, write_sharpen_boost=2.0),
    lambda: sparse_ntm.Model(output_size=8, controller_size=16, memory_size=12,
                             memory_width=6, top_m=3),
], ids=['ntm_two_read_heads', 'ntm_boosted', 'sparse_ntm'])
def test_training_gradients_equal_plain_autodiff(make, monkeypatch):
  """train=True (taps, remat keeping small values) against train=False with every value
  recomputed: the same loss and the same gradient for every parameter."""
  model = make()
  params = model.init(jax.random.PRNGKey(1), X)
  fast = jax.grad(lambda p: _loss(model, p, True))(params)
  monkeypatch.setattr(ntm, 'save_smaller_than',
                      lambda limit: jax.checkpoint_policies.nothing_saveable)
  plain = jax.grad(lambda p: _loss(model, p, False))(params)
  np.testing.assert_allclose(_loss(model, params, True), _loss(model, params, False),
                             rtol=1e-6)
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(fast),
                               jax.tree.leaves(plain)):
    scale = float(jnp.abs(want).max())
    assert scale > 0 or 'bias' in jax.tree_util.keystr(path), path
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * max(scale, 1e-3),
                               err_msg=jax.tree_util.keystr(path))
