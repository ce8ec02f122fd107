"""The whole DNC (controller, interface, usage and allocation, write, temporal links,
read modes) against a step-by-step numpy DNC (Graves et al. 2016, Methods) in the
textbook [N, W] memory layout, one batch row at a time.

The model carries its memory transposed ([B,W,N]), sorts usages by comparison and
has a written-out gradient for its link matrix, all for speed; this checks that
none of that changes a number of the forward pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.models import dnc
from numpy_reference import lstm_step, sigmoid, softmax

B, T, D, OUT, C, N, W = 2, 9, 5, 4, 8, 6, 4


def _oneplus(x):
  return 1.0 + np.log1p(np.exp(x))


def _content(memory, key, strength):
  """softmax_i(β cos(k, M_i)) with memflax's ε inside the norms. memory [N,W], key [W]."""
  eps = 1e-16
  cos = memory @ key / (np.sqrt(key @ key + eps) * np.sqrt((memory ** 2).sum(-1) + eps))
  return softmax(strength * cos)


def _allocation(u):
  """a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i], φ the slots by ascending usage (stable)."""
  a, taken = np.zeros_like(u), 1.0
  for j in sorted(range(len(u)), key=lambda i: u[i]):
    a[j] = (1.0 - u[j]) * taken
    taken *= u[j]
  return a


def _interface(h, proj, r):
  """ξ split in memflax's order (read keys, read strengths, write key, write strength,
  erase, write vector, free gates, allocation gate, write gate, read modes)."""
  raw = np.clip(h @ proj['kernel'] + proj['bias'], -20.0, 20.0)
  sizes = [r * W, r, W, 1, W, W, r, 1, 1, 3 * r]
  parts = np.split(raw, np.cumsum(sizes)[:-1])
  return dict(read_keys=parts[0].reshape(r, W), read_strengths=_oneplus(parts[1]),
              write_key=parts[2], write_strength=_oneplus(parts[3][0]),
              erase=sigmoid(parts[4]), write_vector=parts[5], free=sigmoid(parts[6]),
              alloc_gate=sigmoid(parts[7][0]), write_gate=sigmoid(parts[8][0]),
              modes=softmax(parts[9].reshape(r, 3)))


def _reference(params, x, r):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  cell = p['cell']
  logits = np.zeros((B, T, OUT))
  memories, read_ws = np.zeros((B, T, N, W)), np.zeros((B, T, r, N))
  temporal = 0.0  # largest weight the link matrix gave any slot (backward + forward modes)
  for b in range(B):
    memory, link = np.zeros((N, W)), np.zeros((N, N))
    usage, precedence, write_w = np.zeros(N), np.zeros(N), np.zeros(N)
    read_w, reads = np.zeros((r, N)), np.zeros((r, W))
    h, c = np.zeros(C), np.zeros(C)
    for t in range(T):
      h, c = lstm_step(np.concatenate([x[b, t], reads.ravel()]), h, c,
                       cell['controller']['gates']['kernel'], cell['controller']['gates']['bias'])
      xi = _interface(h, cell['interface']['xi'], r)
      psi = np.prod(1.0 - xi['free'][:, None] * read_w, axis=0)
      usage = (usage + write_w - usage * write_w) * psi
      content = _content(memory, xi['write_key'], xi['write_strength'])
      write_w = xi['write_gate'] * (xi['alloc_gate'] * _allocation(usage)
                                    + (1.0 - xi['alloc_gate']) * content)
      memory = (memory * (1.0 - np.outer(write_w, xi['erase']))
                + np.outer(write_w, xi['write_vector']))
      link = ((1.0 - write_w[:, None] - write_w[None, :]) * link
              + np.outer(write_w, precedence)) * (1.0 - np.eye(N))
      precedence = (1.0 - write_w.sum()) * precedence + write_w
      forward, backward = read_w @ link.T, read_w @ link
      temporal = max(temporal, (xi['modes'][:, :1] * backward + xi['modes'][:, 2:] * forward).max())
      read_w = np.stack([
          xi['modes'][i, 0] * backward[i]
          + xi['modes'][i, 1] * _content(memory, xi['read_keys'][i], xi['read_strengths'][i])
          + xi['modes'][i, 2] * forward[i] for i in range(r)])
      reads = read_w @ memory
      memories[b, t], read_ws[b, t] = memory, read_w
      features = np.concatenate([h, reads.ravel()])
      logits[b, t] = features @ p['readout']['kernel'] + p['readout']['bias']
  return logits, memories, read_ws, temporal


@pytest.mark.parametrize('num_read', [1, 2])
def test_dnc_forward_matches_numpy_step_by_step(num_read):
  model = dnc.Model(output_size=OUT, controller_size=C, memory_size=N, memory_width=W,
                    num_read_heads=num_read)
  x = np.random.default_rng(num_read).integers(0, 2, size=(B, T, D)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(4), jnp.asarray(x))['params']
  # Larger weights than the initialiser's, so gates open, writes sharpen and the link
  # matrix and all three read modes matter within T steps.
  params = jax.tree.map(lambda a: a * 3.0, params)
  (logits, traces), kept = jax.jit(
      lambda v, x: model.apply(v, x, mutable=['intermediates']))({'params': params}, x)
  want_logits, want_memory, want_read_w, temporal = _reference(params, x, num_read)
  np.testing.assert_allclose(logits, want_logits, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(traces['read_weights'], want_read_w, rtol=2e-4, atol=1e-6)
  # Plots read the sown memory as [B,T,N,W], whatever layout the carry keeps.
  (memory,) = kept['intermediates']['cell']['memory']
  np.testing.assert_allclose(memory, want_memory, rtol=2e-4, atol=1e-6)
  # The test means something only if the memory filled and the links moved the reads:
  # their share of a read weight is far above the tolerances. (Sharper writes would make
  # unwritten slots' usages near-ties that float32 and float64 break differently.)
  assert np.abs(want_memory[:, -1]).max() > 0.1
  assert temporal > 0.01, temporal
