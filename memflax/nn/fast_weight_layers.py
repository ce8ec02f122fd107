"""Token mixers whose memory is a matrix per head written by the delta rule or by linear
attention (memflax.nn.delta_rule): DeltaNet and Gated DeltaNet layers.

  q_t, k_t, v_t = SiLU(ShortConv(x W_q)), SiLU(ShortConv(x W_k)), SiLU(ShortConv(x W_v))
  k_t ← k_t / ‖k_t‖, q_t ← q_t / ‖q_t‖ · d_k^(−1/2)            (qk_norm)
  β_t = σ(x_t W_β)                                             (use_beta; else 1)
  g_t = −exp(A) · softplus(x_t W_α + b)                        (gated; else 0), α_t = exp(g_t)
  S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,  o_t = S_tᵀ q_t       (per head)
  y_t = [RMSNorm(o_t) ⊙ SiLU(x_t W_g)] W_o                    (output_norm, output_gate)

Each bracketed item is a switch, as in the DeltaNet and Gated DeltaNet papers (Yang et
al. 2024, 2025); the short causal convolution (kernel `short_conv`, 0 = off) gives each
position its last few neighbours, which the papers found matters for recall. The decay
parametrisation follows Mamba-2: A and the bias b are learned per head.

State for generation (constant per token): per head S [d_k, d_v] and the last
`short_conv − 1` projected inputs of q, k and v.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memflax.nn import delta_rule
from memflax.nn.causal_conv import causal_depthwise_conv

Array = jax.Array
MODES = ('chunk', 'recurrent')


def rms_norm(x: Array, scale: Array, eps: float = 1e-6) -> Array:
  """x [..., d] / RMS(x) · scale [d]."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (normed * scale).astype(x.dtype)


def l2_normalise(x: Array, eps: float = 1e-6) -> Array:
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _decay_log_init(key, shape, dtype=jnp.float32):
  # A ∈ [1, 16] per head (log-spaced start as in Mamba-2): heads forget at different speeds.
  return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, 16.0))


def _dt_bias_init(key, shape, dtype=jnp.float32):
  # softplus(b) log-uniform in [1e-3, 1e-1]: α starts close to 1 (slow forgetting).
  dt = jnp.exp(jax.random.uniform(key, shape, dtype, np.log(1e-3), np.log(1e-1)))
  return dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus


class DeltaNetMixer(nn.Module):
  """x [B, T, D] -> y [B, T, D] (module docstring).

  With `state` (from `init_state`) the call continues a sequence: it returns (y, new
  state); `mode` then still chooses the algorithm (the chunkwise form takes the state as
  its starting memory). head_dim defaults to D / num_heads.
  """

  num_heads: int
  head_dim: int | None = None
  update_rule: str = 'delta'
  gated: bool = False
  use_beta: bool = True
  qk_norm: bool = True
  short_conv: int = 4
  output_norm: bool = True
  output_gate: bool = False
  chunk_size: int = 64
  mode: str = 'chunk'

  def _head_dim(self, features: int) -> int:
    if self.head_dim is not None:
      return self.head_dim
    if features % self.num_heads:
      raise ValueError(f'd_model {features} is not divisible by num_heads {self.num_heads}')
    return features // self.num_heads

  def init_state(self, batch_size: int, features: int) -> dict:
    """{'memory': [B, H, d, d] zeros, 'conv': [B, K−1, 3·H·d] zeros (absent without a
    short convolution)}."""
    d = self._head_dim(features)
    state = {'memory': jnp.zeros((batch_size, self.num_heads, d, d), jnp.float32)}
    if self.short_conv:
      state['conv'] = jnp.zeros((batch_size, self.short_conv - 1, 3 * self.num_heads * d))
    return state

  def _check(self):
    if self.update_rule not in delta_rule.RULES:
      raise ValueError(f'model.update_rule must be one of {delta_rule.RULES}, got '
                       f'{self.update_rule!r}')
    if self.mode not in MODES:
      raise ValueError(f'model.mode must be one of {MODES}, got {self.mode!r}')
    if self.chunk_size < 1:
      raise ValueError(f'model.chunk_size must be ≥ 1, got {self.chunk_size}')
    if self.short_conv < 0 or self.short_conv == 1:
      raise ValueError(f'model.short_conv is a kernel size ≥ 2 (0 = off), got '
                       f'{self.short_conv}')

  @nn.compact
  def __call__(self, x: Array, state: dict | None = None):
    self._check()
    batch, length, features = x.shape
    heads, d = self.num_heads, self._head_dim(features)
    qkv = nn.Dense(3 * heads * d, use_bias=False, name='qkv')(x)     # [B, T, 3Hd]
    new_state = {}
    if self.short_conv:
      kernel = self.param('conv', nn.initializers.normal(1.0 / np.sqrt(self.short_conv)),
                          (self.short_conv, 3 * heads * d))
      qkv, new_state['conv'] = causal_depthwise_conv(qkv, kernel,
                                                     None if state is None else state['conv'])
      qkv = nn.silu(qkv)

    def split_heads(y):  # [B, T, H·d] -> [B, H, T, d]
      return jnp.swapaxes(y.reshape(batch, length, heads, d), 1, 2)

    q, k, v = (split_heads(y) for y in jnp.split(qkv, 3, axis=-1))
    if self.qk_norm:
      q, k = l2_normalise(q), l2_normalise(k)
    q = q / np.sqrt(d)
    if self.use_beta:
      beta = nn.sigmoid(nn.Dense(heads, name='beta')(x))                # [B, T, H]
    else:
      beta = jnp.ones((batch, length, heads), x.dtype)
    if self.gated:
      a_log = self.param('decay_log', _decay_log_init, (heads,))
      dt_bias = self.param('decay_bias', _dt_bias_init, (heads,))
      g = -jnp.exp(a_log) * nn.softplus(nn.Dense(heads, use_bias=False, name='decay')(x)
                                        + dt_bias)
    else:
      g = jnp.zeros((batch, length, heads), jnp.float32)
    beta, g = jnp.swapaxes(beta, 1, 2), jnp.swapaxes(g, 1, 2)           # [B, H, T]

    memory = None if state is None else state['memory']
    # One token (a decoding step) is one recurrent step; the chunkwise form would pad it to a
    # whole chunk and solve a chunk-sized system for it.
    if self.mode == 'chunk' and length > 1:
      o, new_state['memory'] = delta_rule.chunkwise(q, k, v, beta, g, self.chunk_size, memory,
                                                    self.update_rule)
    else:
      o, new_state['memory'] = delta_rule.recurrent(q, k, v, beta, g, memory, self.update_rule)
    if self.output_norm:
      o = rms_norm(o, self.param('output_norm', nn.initializers.ones, (d,)))
    o = jnp.swapaxes(o, 1, 2)                                            # [B, T, H, d]
    if self.output_gate:
      gate = nn.Dense(heads * d, use_bias=False, name='output_gate')(x)
      o = o * nn.silu(gate).reshape(batch, length, heads, d)
    y = nn.Dense(features, use_bias=False, name='out')(o.reshape(batch, length, heads * d))
    return y if state is None else (y, new_state)
