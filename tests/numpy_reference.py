"""Straightforward numpy implementations of the published equations, for tests to compare to."""

from __future__ import annotations

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def lstm_step(x, h, c, kernel, bias):
  """Hochreiter & Schmidhuber LSTM with gates i, f, c̃, o from [x, h] (fused kernel order)."""
  z = np.concatenate([x, h], -1) @ kernel + bias
  i, f, g, o = np.split(z, 4, axis=-1)
  c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
  return sigmoid(o) * np.tanh(c_new), c_new


def torch_gru_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
  """torch.nn.GRUCell's equations, in its parameter layout (rows r, z, n of each weight).

  x [B, D], h [B, H], weight_ih [3H, D], weight_hh [3H, H], bias_ih/bias_hh [3H] -> h' [B, H]:
    r = σ(W_ir x + b_ir + W_hr h + b_hr)     z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ∘ (W_hn h + b_hn))
    h' = (1 − z) ∘ n + z ∘ h
  """
  w_ir, w_iz, w_in = np.split(weight_ih, 3, axis=0)
  w_hr, w_hz, w_hn = np.split(weight_hh, 3, axis=0)
  b_ir, b_iz, b_in = np.split(bias_ih, 3)
  b_hr, b_hz, b_hn = np.split(bias_hh, 3)
  r = sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
  z = sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
  n = np.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
  return (1 - z) * n + z * h


def ntm_address(memory, w_prev, key, beta, gate, shift, gamma):
  """Graves et al. 2014 eqs. (5)-(9) for one head of one example, written element by element.

  memory [N, W], w_prev [N], key [W], scalars beta/gate/gamma, shift [S].
  """
  n = memory.shape[0]
  cos = np.array([key @ memory[i] / (np.sqrt(key @ key + 1e-16) * np.sqrt(memory[i] @ memory[i] + 1e-16))
                  for i in range(n)])
  w_c = softmax(beta * cos)
  w_g = gate * w_c + (1 - gate) * w_prev
  radius = (len(shift) - 1) // 2
  w_s = np.zeros(n)
  for i in range(n):
    for j in range(n):
      offset = (i - j) % n
      # shift index k covers offsets -radius..radius
      for k in range(len(shift)):
        if (k - radius) % n == offset:
          w_s[i] += w_g[j] * shift[k]
  powered = w_s ** gamma
  return powered / powered.sum()


def ntm_write(memory, w, erase, add):
  """M̃_i = M_i ∘ (1 − w_i e) + w_i a for one head, row by row."""
  return np.stack([memory[i] * (1 - w[i] * erase) + w[i] * add for i in range(len(w))])
