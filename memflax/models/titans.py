"""Titans "memory as a layer" (Behrouz et al. 2025): a stack mixing tokens by test-time memory.

Each block's sequence mixer is the neural long-term memory of memflax.nn.titans, an MLP
whose weights are learned at test time.

  x_0 = inputs W_e + b_e                                        [B, T, d_model]
  x_l ← x_{l−1} + NeuralMemory_l(LN(x_{l−1}))                   (l = 1..num_layers)
  x_l ← x_l + FFN_l(LN(x_l))
  logits = LN(x_L) W_r + b_r                                    [B, T, output_size]

No positional encoding: the memory is recurrent, and its short causal convolution sees
the order of neighbouring tokens.

Generation (memflax.generate) carries per layer the memory weights θ and momentum S
(each [B, H, out, in]) and the convolution's history [B, K−1, 3·d_model]: constant memory
per token. A decode step is the chunk-size-1 rule, so it reproduces `__call__` exactly
when chunk_size = 1 (with larger chunks `__call__` takes a chunk's gradients at the
chunk's start, which one-token steps cannot know in advance).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memflax.nn.attention import FeedForward
from memflax.nn.titans import NeuralMemory


class Block(nn.Module):
  """x [B, T, D] -> x + mixer(LN x), then + FFN(LN x). With `state` the mixer continues it
  (chunk size 1) and the call returns (x, new state, gates); otherwise (x, gates)."""

  memory: NeuralMemory
  d_ff: int

  @nn.compact
  def __call__(self, x: jax.Array, state: dict | None = None):
    h = nn.LayerNorm(name='memory_norm')(x)
    if state is None:
      h, gates = self.memory(h)
    else:
      h, state, gates = self.memory.step(state, h)
    x = x + h
    x = x + FeedForward(self.d_ff, name='ffn')(nn.LayerNorm(name='ffn_norm')(x))
    return (x, gates) if state is None else (x, state, gates)


class Model(nn.Module):
  """inputs [B, T, D_in] -> (logits [B, T, output_size], traces).

  traces: the memory's gates 'inner_lr' (θ_t), 'momentum' (η_t), 'forget' (α_t), each
  [B, T, num_layers, num_heads].

  memory_depth: layers of each head's memory MLP (1: a linear matrix memory);
  memory_hidden: its hidden width; chunk_size: tokens whose gradients share the
  chunk-start weights; conv_size: taps of the causal convolution on q, k, v;
  memory_residual: M(x) = x + MLP(x); normalize_keys: L2-normalised q and k;
  max_inner_lr: the largest inner learning rate θ_t; max_inner_grad_norm: each token's
  inner gradient is scaled down to at most this norm (0: not clipped).
  """

  output_size: int
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  d_ff: int = 128
  memory_depth: int = 2
  memory_hidden: int = 32
  chunk_size: int = 16
  conv_size: int = 4
  memory_residual: bool = True
  normalize_keys: bool = True
  max_inner_lr: float = 0.1
  max_inner_grad_norm: float = 0.0

  def setup(self):
    if self.chunk_size < 1 or self.conv_size < 1 or self.memory_depth < 1:
      raise ValueError('model.chunk_size, model.conv_size and model.memory_depth must be ≥ 1, '
                       f'got {self.chunk_size}, {self.conv_size}, {self.memory_depth}')
    self.embed = nn.Dense(self.d_model)
    self.blocks = [
        Block(NeuralMemory(self.d_model, self.num_heads, self.memory_depth, self.memory_hidden,
                           self.chunk_size, self.conv_size, self.memory_residual,
                           self.normalize_keys, self.max_inner_lr,
                           self.max_inner_grad_norm, parent=None),
              self.d_ff, name=f'layer_{i}')
        for i in range(self.num_layers)]
    self.final_norm = nn.LayerNorm()
    self.readout = nn.Dense(self.output_size)

  def __call__(self, inputs: jax.Array, train: bool = False):
    x = self.embed(inputs)
    gates = []
    for block in self.blocks:
      x, g = block(x)
      gates.append(g)
    return self.readout(self.final_norm(x)), _stack_layers(gates)

  def init_decode_state(self, batch_size: int, max_length: int) -> tuple:
    """Per layer θ_0, S = 0 and an empty convolution history; any max_length (the state
    does not grow)."""
    return tuple(block.memory.initial_state(batch_size) for block in self.blocks)

  def decode_step(self, state: tuple, x_t: jax.Array):
    """(state, x_t [B, D_in]) -> (state, logits_t [B, output_size]), the chunk-size-1 rule."""
    x = self.embed(x_t[:, None, :])
    new = []
    for block, layer_state in zip(self.blocks, state):
      x, layer_state, _ = block(x, layer_state)
      new.append(layer_state)
    return tuple(new), self.readout(self.final_norm(x[:, 0]))


def _stack_layers(gates: list[dict]) -> dict:
  """Per-layer {name: [B, T, H]} -> {name: [B, T, num_layers, H]}."""
  return {name: jnp.stack([g[name] for g in gates], axis=2) for name in gates[0]}
