"""Autoregressive sampling from the sequence models, one compiled step per token.

A model that generates has, besides `__call__`, two methods sharing its params:

  init_decode_state(batch_size, max_length) -> state     (a pytree of arrays)
  decode_step(state, x_t [B, D_in]) -> (state, logits_t [B, output_size])

(the LSTM's state is its carry, the Transformers' a key/value cache), so each new
token costs one step, never a re-run of the prefix. `generate` is one jitted
`lax.scan` over positions: it feeds the prompt (teacher forcing), then feeds
back its own samples.

  from memflax import generate
  tokens = generate.generate(model, params, prompt, 200, jax.random.key(0),
                             temperature=0.8, top_k=40)
  text = bytes(np.asarray(tokens[0])).decode('utf-8', 'replace')
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
VOCAB = 256  # bytes


def one_hot_bytes(tokens: Array) -> Array:
  """The byte language model's input encoding: tokens [...] int -> [..., 256] float32."""
  return jax.nn.one_hot(tokens, VOCAB, dtype=jnp.float32)


def sample_logits(key: Array, logits: Array, temperature: float | Array = 1.0,
                  top_k: int = 0) -> Array:
  """Draws one token per row. logits [B, V] -> tokens [B] int32.

  Samples from softmax(logits / temperature) restricted to the `top_k` largest
  logits (0: all; ties with the k-th are kept). temperature ≤ 0 or top_k = 1 is
  greedy (argmax). `temperature` may be traced; `top_k` must be a Python int.
  """
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if top_k == 1:
    return greedy
  if 0 < top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  hot = temperature > 0
  # The division is guarded so temperature 0 gives argmax, not NaN samples.
  sampled = jax.random.categorical(key, logits / jnp.where(hot, temperature, 1.0), axis=-1)
  return jnp.where(hot, sampled.astype(jnp.int32), greedy)


def generate(model: nn.Module, params: Any, prompt: Array, num_new_tokens: int, key: Array,
             temperature: float = 1.0, top_k: int = 0,
             input_fn: Callable[[Array], Array] = one_hot_bytes) -> Array:
  """Continues `prompt` by `num_new_tokens` sampled tokens.

  model: a Model with `init_decode_state` and `decode_step` (lstm, transformer,
  kv_memory_transformer). params: its parameter tree, or the whole variables
  dict {'params': ...}. prompt [B, P] int (P ≥ 1). key: a PRNG key; the token
  after position t is drawn with `fold_in(key, t)`, so the output is a pure
  function of the arguments. input_fn maps tokens [B] to the model's inputs
  [B, D_in] (one-hot bytes by default); pass one function object each time, as
  it is a static argument (like model, num_new_tokens and top_k: changing one
  recompiles; changing temperature, the key, the prompt's values or params does not).

  Returns tokens [B, P + num_new_tokens] int32 whose first P columns are `prompt`.
  """
  prompt = jnp.asarray(prompt)
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f'prompt must be [batch, length ≥ 1] tokens, got shape {prompt.shape}')
  if not jnp.issubdtype(prompt.dtype, jnp.integer):
    raise ValueError(f'prompt must hold integer tokens, got {prompt.dtype}')
  if num_new_tokens < 0 or top_k < 0:
    raise ValueError(f'num_new_tokens ({num_new_tokens}) and top_k ({top_k}) must be ≥ 0')
  variables = params if 'params' in params else {'params': params}
  return _generate(model, variables, prompt.astype(jnp.int32), int(num_new_tokens), key,
                   jnp.asarray(temperature, jnp.float32), int(top_k), input_fn)


@functools.partial(jax.jit, static_argnames=('model', 'num_new_tokens', 'top_k', 'input_fn'))
def _generate(model, variables, prompt, num_new_tokens, key, temperature, top_k, input_fn):
  batch, prompt_length = prompt.shape
  total = prompt_length + num_new_tokens
  state = model.apply(variables, batch, total, method='init_decode_state')
  # forced[t] is prompt token t + 1 while the prompt lasts (teacher forcing).
  forced = jnp.pad(prompt[:, 1:], ((0, 0), (0, num_new_tokens))).T  # [total − 1, B]

  def step(carry, xs):
    state, token = carry
    t, forced_next = xs
    state, logits = model.apply(variables, state, input_fn(token), method='decode_step')
    sampled = sample_logits(jax.random.fold_in(key, t), logits, temperature, top_k)
    next_token = jnp.where(t + 1 < prompt_length, forced_next, sampled)
    return (state, next_token), next_token

  _, new = jax.lax.scan(step, (state, prompt[:, 0]), (jnp.arange(total - 1), forced))
  return jnp.concatenate([prompt[:, :1], new.T], axis=1)


def generate_in_windows(model: nn.Module, params: Any, prompt: Array, num_new_tokens: int,
                        key: Array, context: int, **sampling) -> Array:
  """`generate` for models trained on windows of `context` tokens (absolute positions):
  past the window, predictions from positions never trained on fall apart, so once a
  window is full the last context/2 tokens become the prompt of a fresh one. Within a
  window every token is one decode step; each new window re-encodes context/2 tokens once.
  All windows after the first have the same shapes, so they share one compilation.

  prompt [B, P] int; returns [B, P + num_new_tokens], a pure function of the arguments.
  """
  keep = max(1, context // 2)
  prompt = jnp.asarray(prompt)
  window = prompt[:, -keep:] if prompt.shape[1] >= context else prompt
  first = min(num_new_tokens, context - window.shape[1])
  tokens = generate(model, params, window, first, jax.random.fold_in(key, 0), **sampling)
  pieces, made, index = [prompt, tokens[:, window.shape[1]:]], first, 0
  while made < num_new_tokens:
    index += 1
    count = min(context - keep, num_new_tokens - made)
    tail = jnp.concatenate(pieces, axis=1)[:, -keep:]
    more = generate(model, params, tail, count, jax.random.fold_in(key, index), **sampling)
    pieces.append(more[:, keep:])
    made += count
  return jnp.concatenate(pieces, axis=1)
