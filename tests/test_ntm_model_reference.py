"""The whole NTM (controller, heads, addressing, read, write, normalisation) against a
step-by-step numpy implementation of Graves et al. 2014 in the textbook [N, W] layout.

The model keeps its memory transposed ([B,W,N]) for speed; this checks that the
layout changes no number.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.models import ntm
from numpy_reference import lstm_step, ntm_address, ntm_write, sigmoid, softmax

B, T, D, OUT, C, N, W, SHIFT = 2, 7, 5, 4, 8, 6, 4, 1


def _softplus(x):
  return np.log1p(np.exp(x))


def _heads(h, proj, num_heads, writes):
  """NTMHeads in numpy: [keys W, β, g, shift S, γ, (erase W, add W)] per head."""
  raw = np.clip(h @ proj['kernel'] + proj['bias'], -20.0, 20.0).reshape(num_heads, -1)
  s = 2 * SHIFT + 1
  out = [dict(key=r[:W], beta=_softplus(r[W]), gate=sigmoid(r[W + 1]),
              shift=softmax(r[W + 2:W + 2 + s]), gamma=1 + _softplus(r[W + 2 + s]))
         for r in raw]
  if writes:
    for head, r in zip(out, raw):
      head['erase'] = sigmoid(r[W + 3 + s:2 * W + 3 + s])
      head['add'] = np.tanh(r[2 * W + 3 + s:])
  return out


def _reference(params, x, num_read, frobenius):
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  cell = p['cell']
  logits, memories = np.zeros((B, T, OUT)), np.zeros((B, T, N, W))
  for b in range(B):
    memory = np.full((N, W), 1e-6)
    if frobenius:
      memory = memory / np.linalg.norm(memory)
    focus = np.eye(N)[0]
    read_w, write_w = [focus] * num_read, [focus]
    reads = [focus @ memory for _ in range(num_read)]
    h, c = np.zeros(C), np.zeros(C)
    for t in range(T):
      h, c = lstm_step(np.concatenate([x[b, t], *reads]), h, c,
                       cell['controller']['gates']['kernel'], cell['controller']['gates']['bias'])
      rp = _heads(h, cell['read_heads']['proj'], num_read, writes=False)
      (wp,) = _heads(h, cell['write_heads']['proj'], 1, writes=True)
      read_w = [ntm_address(memory, w, q['key'], q['beta'], q['gate'], q['shift'], q['gamma'])
                for q, w in zip(rp, read_w)]
      write_w = [ntm_address(memory, write_w[0], wp['key'], wp['beta'], wp['gate'],
                             wp['shift'], wp['gamma'])]
      reads = [w @ memory for w in read_w]
      memory = ntm_write(memory, write_w[0], wp['erase'], wp['add'])
      if frobenius:
        memory = memory / np.linalg.norm(memory)
      memories[b, t] = memory
      features = np.concatenate([h, *reads])
      logits[b, t] = features @ p['readout']['kernel'] + p['readout']['bias']
  return logits, memories


@pytest.mark.parametrize('num_read,frobenius', [(1, True), (2, True), (2, False)])
def test_ntm_forward_matches_numpy_step_by_step(num_read, frobenius):
  model = ntm.Model(output_size=OUT, controller_size=C, memory_size=N, memory_width=W,
                    num_read_heads=num_read, shift_range=SHIFT, frobenius_norm=frobenius)
  x = np.random.default_rng(num_read).integers(0, 2, size=(B, T, D)).astype(np.float32)
  params = model.init(jax.random.PRNGKey(3), jnp.asarray(x))['params']
  # Larger weights than the initialiser's, so heads move and memory fills within T steps.
  params = jax.tree.map(lambda a: a * 3.0, params)
  (logits, traces), kept = model.apply({'params': params}, jnp.asarray(x),
                                       mutable=['intermediates'])
  want_logits, want_memory = _reference(params, x, num_read, frobenius)
  np.testing.assert_allclose(logits, want_logits, rtol=2e-4, atol=2e-5)
  # Plots read the sown memory as [B,T,N,W], whatever layout the carry keeps.
  (memory,) = kept['intermediates']['cell']['memory']
  np.testing.assert_allclose(memory, want_memory, rtol=2e-4, atol=1e-6)
  assert traces['read_weights'].shape == (B, T, num_read, N)
