"""NTM options for length generalisation, checked against numpy and the NTM equations.

- `write_sharpen_boost` κ: the write head's γ becomes γ + κ·shift_confidence(shift).
- `controller_forget_bias`: the LSTM controller's initial forget-gate bias.
- Defaults reproduce the original model exactly (same parameters, same outputs).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.models import ntm
from memflax.nn import memory as mem
from numpy_reference import ntm_address, softmax

X = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=(2, 9, 9)), jnp.float32)
CELL = dict(controller_size=8, memory_size=6, memory_width=4, num_read_heads=1,
            num_write_heads=1, shift_range=1, frobenius_norm=False, controller_clip=20.0,
            controller_forget_bias=1.0)


def _carry(batch=2):
  # NTMCell keeps its memory slots last, [B,W,N].
  # One weighting per head, the read head's first.
  focus = jnp.broadcast_to(jax.nn.one_hot(0, 6), (batch, 2, 6))
  return dict(controller=(jnp.zeros((batch, 8)), jnp.zeros((batch, 8))),
              memory=jnp.full((batch, 4, 6), 0.1), reads=jnp.zeros((batch, 1, 4)),
              weights=focus)


def test_shift_confidence_matches_its_formula():
  s = softmax(np.random.default_rng(4).normal(size=(2, 3, 5)) * 2).astype(np.float32)
  np.testing.assert_allclose(mem.shift_confidence(jnp.asarray(s)),
                             (s.max(-1) - 1 / 5) / (1 - 1 / 5), rtol=1e-5)
  np.testing.assert_allclose(mem.shift_confidence(jnp.full((1, 1, 3), 1 / 3)), 0.0, atol=1e-6)
  np.testing.assert_allclose(mem.shift_confidence(jnp.eye(3)[None]), 1.0)
  np.testing.assert_allclose(mem.shift_confidence(jnp.ones((2, 1, 1))), 1.0)  # S = 1


def test_write_sharpen_boost_adds_kappa_times_shift_confidence(monkeypatch):
  """One NTMCell step (no scan, so values are concrete): record what the address call gets
  (one call for all heads, the read head first)."""
  seen = []
  address = mem.address

  def recording_address(memory, w_prev, keys, beta, gate, shift, gamma, slots_last=False):
    seen.append((np.asarray(shift), np.asarray(gamma)))
    return address(memory, w_prev, keys, beta, gate, shift, gamma, slots_last)

  monkeypatch.setattr(mem, 'address', recording_address)
  plain = ntm.NTMCell(**CELL, write_sharpen_boost=0.0)
  boosted = ntm.NTMCell(**CELL, write_sharpen_boost=3.0)
  params = plain.init(jax.random.PRNGKey(0), _carry(), X[:, 0])
  seen.clear()
  plain.apply(params, _carry(), X[:, 0])
  boosted.apply(params, _carry(), X[:, 0])  # same parameters: the boost adds none
  (shift, gamma0), (_, gamma1) = seen
  np.testing.assert_allclose(gamma1[:, 0], gamma0[:, 0])  # the read head untouched
  conf = (shift[:, 1].max(-1) - 1 / 3) / (1 - 1 / 3)
  np.testing.assert_allclose(gamma1[:, 1], gamma0[:, 1] + 3.0 * conf, rtol=1e-5)
  assert not np.allclose(conf, 0.0)  # the boost is visible


def test_defaults_keep_the_original_parameters_and_outputs():
  base = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4)
  explicit = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4,
                       controller_forget_bias=1.0, write_sharpen_boost=0.0)
  p1 = base.init(jax.random.PRNGKey(3), X)
  p2 = explicit.init(jax.random.PRNGKey(3), X)
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  np.testing.assert_array_equal(base.apply(p1, X)[0], explicit.apply(p1, X)[0])


def test_boost_adds_no_parameters_and_changes_the_function():
  base = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4)
  boosted = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4,
                      write_sharpen_boost=3.0)
  params = base.init(jax.random.PRNGKey(3), X)
  assert (jax.tree.structure(params) ==
          jax.tree.structure(boosted.init(jax.random.PRNGKey(3), X)))
  assert not np.allclose(base.apply(params, X)[0], boosted.apply(params, X)[0])


def test_negative_boost_is_rejected():
  with pytest.raises(ValueError, match='write_sharpen_boost'):
    ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4,
              write_sharpen_boost=-1.0).init(jax.random.PRNGKey(0), X)


@pytest.mark.parametrize('forget_bias', [1.0, 10.0])
def test_controller_forget_bias_sets_the_lstm_forget_gate_bias(forget_bias):
  model = ntm.Model(output_size=8, controller_size=8, memory_size=6, memory_width=4,
                    controller_forget_bias=forget_bias)
  params = model.init(jax.random.PRNGKey(0), X)['params']
  bias = np.asarray(params['cell']['controller']['gates']['bias'])
  hidden = 8  # gate order i, f, c̃, o
  np.testing.assert_array_equal(bias[hidden:2 * hidden], forget_bias)
  np.testing.assert_array_equal(np.delete(bias, np.s_[hidden:2 * hidden]), 0.0)


def _walk(gamma, gate, shift, steps, n=128):
  """Graves eqs. 5-9 in numpy: a head that each step mixes a fraction `gate` of a flat
  content weighting (every memory row alike) into its focus, shifts and sharpens."""
  memory = np.full((n, 4), 0.1)
  w = np.eye(n)[0]
  peaks = []
  for _ in range(steps):
    w = ntm_address(memory, w, np.ones(4), 5.0, gate, shift, gamma)
    peaks.append(w.max())
  return np.array(peaks), w


CRISP = np.array([0.0005, 0.0005, 0.999])   # a learned +1 step
UNIFORM = np.full(3, 1 / 3)                  # a shift at initialisation


def test_flat_content_leak_blurs_the_trained_write_head():
  """γ ≈ 1.2 and g ≈ 0.45 (measured on the default run's write head): the focus fades to
  uniform within ~40 steps although every step moves it exactly one slot."""
  peaks, _ = _walk(1.2, 0.45, CRISP, 40)
  assert peaks[0] > 0.5 and peaks[-1] < 2.0 / 128


def test_boost_keeps_a_confident_walk_sharp_and_leaves_an_unsure_head_soft():
  """The same head with κ = 3: a crisp shift raises γ to ≈ 4.2 and the focus survives 120
  steps; with a uniform shift (as at initialisation) γ and the weighting are unchanged."""
  kappa = 3.0
  conf = lambda s: (s.max() - 1 / 3) / (1 - 1 / 3)
  peaks, w = _walk(1.2 + kappa * conf(CRISP), 0.45, CRISP, 120)
  assert peaks.min() > 0.95 and int(w.argmax()) == 120
  np.testing.assert_allclose(_walk(1.2 + kappa * conf(UNIFORM), 0.45, UNIFORM, 5)[1],
                             _walk(1.2, 0.45, UNIFORM, 5)[1])


def test_flat_content_weighting_is_uniform_over_identical_rows():
  memory = jnp.full((1, 16, 4), 0.3)
  key = jnp.asarray(np.random.default_rng(2).normal(size=(1, 1, 4)), jnp.float32)
  w = mem.content_weighting(memory, key, jnp.array([[7.0]]))
  np.testing.assert_allclose(w, softmax(np.zeros(16))[None, None], rtol=1e-6)
