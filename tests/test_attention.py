"""memflax.nn.attention against NumPy transcriptions of its equations."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from memflax.nn import attention as attn
from memflax.nn import sparse

TOL = dict(rtol=1e-5, atol=1e-5)


def _rand(seed, *shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def np_masked_softmax(logits, mask):
  """Softmax over the keys where mask is True; rows with no True give all zeros."""
  logits = np.asarray(logits, np.float64)
  mask = np.broadcast_to(mask, logits.shape)
  out = np.zeros_like(logits)
  for idx in np.ndindex(logits.shape[:-1]):
    keep = mask[idx]
    if keep.any():
      e = np.exp(logits[idx][keep] - logits[idx][keep].max())
      out[idx + (keep,)] = e / e.sum()
  return out


def np_attention(q, k, v, mask=None):
  """softmax(Q Kᵀ / √d_k) V in float64."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
  if mask is None:
    mask = np.ones(logits.shape, bool)
  w = np_masked_softmax(logits, mask)
  return w @ v, w


def np_layer_norm(x, p, eps=1e-6):
  x = np.asarray(x, np.float64)
  mu = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def np_multi_head(p, xq, xkv, num_heads, mask=None):
  """Concat(head_1..head_h) W^O with each head computed on its own kernel columns."""
  wq, wk, wv, wo = (np.asarray(p[n]['kernel'], np.float64)
                    for n in ('query', 'key', 'value', 'out'))
  d = wq.shape[1] // num_heads
  heads = []
  for i in range(num_heads):
    cols = slice(i * d, (i + 1) * d)
    head, _ = np_attention(xq @ wq[:, cols], xkv @ wk[:, cols], xkv @ wv[:, cols], mask)
    heads.append(head)
  return np.concatenate(heads, axis=-1) @ wo


def np_ffn(p, x):
  h = np.maximum(0.0, x @ p['hidden']['kernel'] + p['hidden']['bias'])
  return h @ p['output']['kernel'] + p['output']['bias']


def np_causal(t):
  return np.tril(np.ones((t, t), bool))


# ----------------------------------------------------------------------------- attention


def test_dot_product_attention_matches_numpy():
  q, k, v = _rand(0, 2, 3, 5, 4), _rand(1, 2, 3, 7, 4), _rand(2, 2, 3, 7, 6)
  out, w = attn.dot_product_attention(q, k, v)
  ref_out, ref_w = np_attention(q, k, v)
  assert out.shape == (2, 3, 5, 6) and w.shape == (2, 3, 5, 7)
  np.testing.assert_allclose(w, ref_w, **TOL)
  np.testing.assert_allclose(out, ref_out, **TOL)
  np.testing.assert_allclose(np.sum(w, -1), 1.0, **TOL)


@pytest.mark.parametrize('heads', [2, 3])  # 3 = batch: the case a [B, 1, Tk] mask got wrong
def test_padding_mask_masks_per_batch_item_over_all_heads(heads):
  batch, tq, tk = 3, 4, 6
  q = _rand(3, batch, heads, tq, 5)
  k, v = _rand(4, batch, heads, tk, 5), _rand(5, batch, heads, tk, 2)
  lengths = np.array([6, 2, 4])
  valid = np.arange(tk)[None, :] < lengths[:, None]
  mask = attn.padding_mask(jnp.asarray(valid))
  assert mask.shape == (batch, 1, 1, tk)
  out, w = attn.dot_product_attention(q, k, v, mask)
  for b, n in enumerate(lengths):
    assert np.all(np.asarray(w)[b, :, :, n:] == 0.0)
    # Item b's padding applies to every head of item b: attention over its valid
    # prefix alone, head by head.
    for h in range(heads):
      ref_out, ref_w = np_attention(q[b, h], k[b, h, :n], v[b, h, :n])
      np.testing.assert_allclose(np.asarray(w)[b, h, :, :n], ref_w, **TOL)
      np.testing.assert_allclose(out[b, h], ref_out, **TOL)


def test_single_head_padding_mask_needs_its_query_axis_only():
  batch, tq, tk = 3, 4, 6
  q, k, v = _rand(3, batch, tq, 5), _rand(4, batch, tk, 5), _rand(5, batch, tk, 2)
  valid = np.arange(tk)[None, :] < np.array([6, 2, 4])[:, None]
  out, w = attn.dot_product_attention(q, k, v, jnp.asarray(valid[:, None, :]))
  ref_out, ref_w = np_attention(q, k, v, valid[:, None, :])
  np.testing.assert_allclose(w, ref_w, **TOL)
  np.testing.assert_allclose(out, ref_out, **TOL)
  # The multi-head layout has one rank too many for [B, Tq, Tk] logits.
  with pytest.raises(ValueError, match='expected'):
    attn.dot_product_attention(q, k, v, attn.padding_mask(jnp.asarray(valid)))


@pytest.mark.parametrize('shape', [(3, 1, 6),        # [B, 1, Tk]: rank 3 against rank 4
                                   (6,),             # [Tk]
                                   (3, 3, 4, 5),     # wrong Tk
                                   (2, 1, 1, 6),     # wrong B
                                   (1, 3, 1, 4, 6)])  # rank 5
def test_mask_of_the_wrong_shape_raises_naming_the_expected_one(shape):
  q, k, v = _rand(0, 3, 3, 4, 5), _rand(1, 3, 3, 6, 5), _rand(2, 3, 3, 6, 2)
  mask = jnp.ones(shape, jnp.bool_)
  expected = r'expected \[Tq, Tk\] = \(4, 6\) or rank 4'
  with pytest.raises(ValueError, match=expected):
    attn.dot_product_attention(q, k, v, mask)
  with pytest.raises(ValueError, match=expected):  # the sparse drop-in follows the same rules
    sparse.sparse_dot_product_attention(q, k, v, mask, m=2)


def test_masks_of_full_rank_with_unit_axes_are_accepted():
  q, k, v = _rand(0, 3, 2, 4, 5), _rand(1, 3, 2, 6, 5), _rand(2, 3, 2, 6, 2)
  rng = np.random.default_rng(3)
  for shape in [(4, 6), (1, 1, 4, 6), (3, 1, 4, 6), (1, 2, 1, 6), (3, 2, 4, 6)]:
    mask = rng.random(shape) < 0.7
    out, w = attn.dot_product_attention(q, k, v, jnp.asarray(mask))
    ref_out, ref_w = np_attention(q, k, v, mask)
    np.testing.assert_allclose(w, ref_w, **TOL)
    np.testing.assert_allclose(out, ref_out, **TOL)


def test_causal_mask_matches_numpy_and_zeroes_the_future():
  t = 6
  q, k, v = _rand(6, 2, t, 4), _rand(7, 2, t, 4), _rand(8, 2, t, 3)
  mask = attn.causal_mask(t)
  np.testing.assert_array_equal(mask, np_causal(t))
  out, w = attn.dot_product_attention(q, k, v, mask)
  assert np.all(np.asarray(w)[:, np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] == 0.0)
  ref_out, ref_w = np_attention(q, k, v, np_causal(t))
  np.testing.assert_allclose(w, ref_w, **TOL)
  np.testing.assert_allclose(out, ref_out, **TOL)
  # The first query can only see the first key.
  np.testing.assert_allclose(out[:, 0], v[:, 0], **TOL)


def test_causal_and_padding_masks_combine():
  t = 5
  valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  q, k, v = _rand(9, 2, 2, t, 3), _rand(10, 2, 2, t, 3), _rand(11, 2, 2, t, 3)
  mask = attn.causal_mask(t) & attn.padding_mask(jnp.asarray(valid))
  assert mask.shape == (2, 1, t, t)
  out, w = attn.dot_product_attention(q, k, v, mask)
  ref_out, ref_w = np_attention(q, k, v, np_causal(t) & valid[:, None, None, :])
  np.testing.assert_allclose(w, ref_w, **TOL)
  np.testing.assert_allclose(out, ref_out, **TOL)


def test_fully_masked_query_reads_zero():
  q, k, v = _rand(12, 3, 4), _rand(13, 5, 4), _rand(14, 5, 2)
  mask = np.ones((3, 5), bool)
  mask[1] = False
  out, w = attn.dot_product_attention(q, k, v, mask)
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(w[1], 0.0)
  np.testing.assert_array_equal(out[1], 0.0)
  grads = jax.grad(lambda q: jnp.sum(attn.dot_product_attention(q, k, v, mask)[0]))(q)
  assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[1] == 0.0)


def test_attention_gradients_match_finite_differences():
  q, k, v = _rand(15, 2, 3, 4), _rand(16, 2, 5, 4), _rand(17, 2, 5, 3)
  mask = jnp.asarray(np.random.default_rng(18).random((2, 3, 5)) > 0.3).at[..., 0].set(True)

  # jit: check_grads evaluates f many times, and eager dispatch dominates at this size.
  @jax.jit
  def f(q, k, v):
    return attn.dot_product_attention(q, k, v, mask)[0]

  check_grads(f, (q, k, v), order=1, modes=['rev'], atol=1e-2, rtol=1e-2, eps=1e-3)
  check_grads(f, (q, k, v), order=2, modes=['rev'], atol=5e-2, rtol=5e-2, eps=1e-2)


def test_attention_bf16_runs_and_stays_finite():
  q, k, v = (jnp.asarray(_rand(s, 2, 6, 8), jnp.bfloat16) for s in (19, 20, 21))
  out, w = attn.dot_product_attention(q, k, v, attn.causal_mask(6))
  assert out.dtype == jnp.bfloat16 and w.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  np.testing.assert_allclose(np.sum(w, -1), 1.0, rtol=1e-5)
  ref_out, _ = np_attention(*(np.asarray(a, np.float32) for a in (q, k, v)), np_causal(6))
  np.testing.assert_allclose(np.asarray(out, np.float32), ref_out, atol=5e-2)


def test_attention_jit_does_not_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(q, k, v):
    return attn.dot_product_attention(q, k, v, attn.causal_mask(q.shape[-2]))[0]

  chex.clear_trace_counter()
  for seed in (22, 23):
    f(_rand(seed, 2, 4, 3), _rand(seed + 1, 2, 4, 3), _rand(seed + 2, 2, 4, 3))


# ----------------------------------------------------------------------------- multi-head


@pytest.mark.parametrize('use_mask', [False, True])
def test_multi_head_self_attention_matches_per_head_numpy(use_mask):
  batch, t, d, heads = 2, 5, 12, 3
  x = _rand(30, batch, t, d)
  mha = attn.MultiHeadAttention(num_heads=heads)
  mask = attn.causal_mask(t) if use_mask else None
  params = mha.init(jax.random.PRNGKey(0), x, mask=mask)['params']
  assert params['query']['kernel'].shape == (d, d) and 'bias' not in params['query']
  assert params['out']['kernel'].shape == (d, d)
  out, state = mha.apply({'params': params}, x, mask=mask, mutable=['intermediates'])
  ref = np_multi_head(params, x, x, heads, np_causal(t) if use_mask else None)
  assert out.shape == (batch, t, d)
  np.testing.assert_allclose(out, ref, **TOL)
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (batch, heads, t, t)
  if use_mask:
    assert np.all(np.asarray(weights)[..., np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]]
                  == 0.0)


# heads = 2 = batch; the mask either with its head axis ([B, 1, 1, Tk], used as is)
# or without ([B, 1, Tk], which the layer gives one).
@pytest.mark.parametrize('heads', [4, 2])
@pytest.mark.parametrize('with_head_axis', [True, False])
def test_multi_head_cross_attention_with_padding_and_explicit_sizes(heads, with_head_axis):
  batch, tq, tk, dq, dkv, head_dim, out = 2, 3, 6, 5, 7, 2, 9
  xq, xkv = _rand(31, batch, tq, dq), _rand(32, batch, tk, dkv)
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  mha = attn.MultiHeadAttention(num_heads=heads, head_dim=head_dim, out_features=out)
  mask = (attn.padding_mask(jnp.asarray(valid)) if with_head_axis
          else jnp.asarray(valid[:, None, :]))
  params = mha.init(jax.random.PRNGKey(1), xq, xkv, mask)['params']
  assert params['query']['kernel'].shape == (dq, heads * head_dim)
  assert params['key']['kernel'].shape == (dkv, heads * head_dim)
  assert params['out']['kernel'].shape == (heads * head_dim, out)
  y = mha.apply({'params': params}, xq, xkv, mask)
  assert y.shape == (batch, tq, out)
  np.testing.assert_allclose(y, np_multi_head(params, xq, xkv, heads, valid[:, None, :]), **TOL)
  # Padded keys are invisible: changing them leaves the output unchanged.
  xkv2 = xkv.copy()
  xkv2[0, 4:] = 100.0
  np.testing.assert_allclose(mha.apply({'params': params}, xq, xkv2, mask), y, **TOL)


def test_multi_head_rejects_indivisible_width():
  with pytest.raises(ValueError, match='divisible'):
    attn.MultiHeadAttention(num_heads=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 8)))


def test_multi_head_gradients_match_finite_differences():
  x = _rand(33, 1, 4, 6)
  mha = attn.MultiHeadAttention(num_heads=2)
  params = mha.init(jax.random.PRNGKey(2), x)['params']
  mask = attn.causal_mask(4)

  @jax.jit
  def f(params, x):
    return mha.apply({'params': params}, x, mask=mask)

  check_grads(f, (params, x), order=1, modes=['rev'], atol=1e-2, rtol=1e-2, eps=1e-3)


# ----------------------------------------------------------------------------- FFN, positions


def test_feed_forward_matches_numpy():
  x = _rand(40, 2, 3, 6)
  ffn = attn.FeedForward(d_ff=10)
  params = ffn.init(jax.random.PRNGKey(3), x)['params']
  # Non-zero biases so b_1 and b_2 are checked too.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.asarray(_rand(41, *p.shape)), params)
  y = ffn.apply({'params': params}, x)
  assert y.shape == (2, 3, 6)
  ref = np_ffn(jax.tree.map(lambda a: np.asarray(a, np.float64), params), x.astype(np.float64))
  np.testing.assert_allclose(y, ref, **TOL)
  assert np.any(np.asarray(x @ params['hidden']['kernel'] + params['hidden']['bias']) < 0), \
      'inputs should exercise the ReLU'


@pytest.mark.parametrize('features', [16, 7])
def test_sinusoidal_encoding_closed_form(features):
  length = 50
  table = np.asarray(attn.sinusoidal_encoding(length, features))
  assert table.shape == (length, features) and table.dtype == np.float32
  for pos in range(length):
    for j in range(features):
      i = j // 2
      angle = pos / 10000 ** (2 * i / features)
      expected = np.sin(angle) if j % 2 == 0 else np.cos(angle)
      assert abs(table[pos, j] - expected) < 1e-6, (pos, j)


def test_rotary_embedding_rotates_each_half_pair_by_its_angle():
  x = np.random.default_rng(7).normal(size=(2, 5, 8)).astype(np.float32)
  positions = np.array([0, 1, 2, 7, 30])
  out = np.asarray(attn.rotary_embedding(jnp.asarray(x), jnp.asarray(positions)))
  expected = np.empty_like(x, dtype=np.float64)
  for t, p in enumerate(positions):
    for i in range(4):  # pair (i, i + d/2) turns by p·θ_i, θ_i = 10000^(−2i/d)
      angle = p * 10000.0 ** (-2 * i / 8)
      a, b = x[:, t, i], x[:, t, i + 4]
      expected[:, t, i] = a * np.cos(angle) - b * np.sin(angle)
      expected[:, t, i + 4] = a * np.sin(angle) + b * np.cos(angle)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='even head width'):
    attn.rotary_embedding(jnp.zeros((3, 5)), jnp.arange(3))


def test_rotary_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(8)
  q, k = (jnp.asarray(rng.normal(size=(1, 16)), jnp.float32) for _ in range(2))
  def score(m, n):
    return float(attn.rotary_embedding(q, jnp.array([m]))[0]
                 @ attn.rotary_embedding(k, jnp.array([n]))[0])
  np.testing.assert_allclose([score(5 + s, 2 + s) for s in (0, 3, 40)], score(5, 2), rtol=1e-4)
  assert abs(score(5, 2) - score(5, 4)) > 1e-3  # but does depend on m − n


def test_rotary_attention_is_self_attention_only():
  mha = attn.MultiHeadAttention(2, rotary=True)
  x = jnp.ones((1, 3, 8))
  with pytest.raises(ValueError, match='self-attention only'):
    mha.init(jax.random.PRNGKey(0), x, x)


def test_learned_positional_embedding():
  module = attn.LearnedPositionalEmbedding(max_len=10, features=4)
  params = module.init(jax.random.PRNGKey(4), 10)['params']
  assert params['embedding'].shape == (10, 4)
  np.testing.assert_array_equal(module.apply({'params': params}, 6), params['embedding'][:6])
  with pytest.raises(ValueError, match='max_len'):
    module.apply({'params': params}, 11)


# ----------------------------------------------------------------------------- blocks


def _np_tree(params):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def _perturbed_init(module, *args, **kwargs):
  """Params with LayerNorm scale/bias moved off 1/0, so the test sees them used."""
  params = module.init(jax.random.PRNGKey(5), *args, **kwargs)['params']
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(6)
  leaves = [p + 0.1 * rng.standard_normal(p.shape).astype(np.float32) for p in leaves]
  return jax.tree.unflatten(tree, leaves)


def test_encoder_block_matches_numpy():
  batch, t, d, heads = 2, 5, 8, 2
  x = _rand(50, batch, t, d)
  block = attn.EncoderBlock(num_heads=heads, d_ff=16)
  mask = attn.causal_mask(t)
  params = _perturbed_init(block, x, mask=mask)
  y = block.apply({'params': params}, x, mask=mask)
  p = _np_tree(params)
  x64 = x.astype(np.float64)
  h = np_layer_norm(x64, p['attention_norm'])
  x64 = x64 + np_multi_head(p['attention'], h, h, heads, np_causal(t))
  ref = x64 + np_ffn(p['ffn'], np_layer_norm(x64, p['ffn_norm']))
  np.testing.assert_allclose(y, ref, **TOL)


def test_decoder_block_matches_numpy_and_is_causal():
  batch, t, s, d, heads = 2, 4, 6, 8, 4
  x, memory = _rand(51, batch, t, d), _rand(52, batch, s, d)
  source_valid = np.array([[1] * 6, [1, 1, 1, 0, 0, 0]], bool)
  cross_mask = attn.padding_mask(jnp.asarray(source_valid))
  block = attn.DecoderBlock(num_heads=heads, d_ff=16)
  params = _perturbed_init(block, x, memory, cross_mask=cross_mask)
  y = block.apply({'params': params}, x, memory, cross_mask=cross_mask)
  p = _np_tree(params)
  x64 = x.astype(np.float64)
  h = np_layer_norm(x64, p['self_attention_norm'])
  x64 = x64 + np_multi_head(p['self_attention'], h, h, heads, np_causal(t))
  h = np_layer_norm(x64, p['cross_attention_norm'])
  x64 = x64 + np_multi_head(p['cross_attention'], h, memory, heads, source_valid[:, None, :])
  ref = x64 + np_ffn(p['ffn'], np_layer_norm(x64, p['ffn_norm']))
  np.testing.assert_allclose(y, ref, **TOL)
  # Changing the last target step must leave earlier outputs untouched.
  x2 = x.copy()
  x2[:, -1] += 5.0
  y2 = block.apply({'params': params}, x2, memory, cross_mask=cross_mask)
  np.testing.assert_allclose(y2[:, :-1], y[:, :-1], **TOL)
  assert not np.allclose(y2[:, -1], y[:, -1])


def test_block_dropout_uses_dropout_rng_only_when_training():
  x = _rand(53, 2, 5, 8)
  block = attn.EncoderBlock(num_heads=2, d_ff=16, dropout_rate=0.5)
  params = block.init(jax.random.PRNGKey(7), x)['params']
  plain = attn.EncoderBlock(num_heads=2, d_ff=16).apply({'params': params}, x)
  np.testing.assert_allclose(block.apply({'params': params}, x, train=False), plain, **TOL)
  a = block.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.PRNGKey(0)})
  b = block.apply({'params': params}, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
  assert not np.allclose(a, plain) and not np.allclose(a, b)
  with pytest.raises(Exception, match='dropout'):
    block.apply({'params': params}, x, train=True)


def test_blocks_bf16_inputs_stay_finite():
  x = jnp.asarray(_rand(54, 2, 6, 8), jnp.bfloat16)
  enc = attn.EncoderBlock(num_heads=2, d_ff=16)
  y = enc.apply(enc.init(jax.random.PRNGKey(8), x), x, mask=attn.causal_mask(6))
  dec = attn.DecoderBlock(num_heads=2, d_ff=16)
  z = dec.apply(dec.init(jax.random.PRNGKey(9), x, x), x, x)
  for out in (y, z):
    assert out.shape == (2, 6, 8)
    assert np.all(np.isfinite(np.asarray(out, np.float32)))


def test_encoder_block_jit_does_not_retrace():
  block = attn.EncoderBlock(num_heads=2, d_ff=16)
  x = _rand(55, 2, 5, 8)
  params = block.init(jax.random.PRNGKey(10), x)['params']

  @jax.jit
  @chex.assert_max_traces(n=1)
  def f(params, x):
    return block.apply({'params': params}, x, mask=attn.causal_mask(x.shape[1]))

  chex.clear_trace_counter()
  f(params, x)
  f(params, x + 1.0)


@pytest.mark.parametrize('block', ['ffn', 'encoder', 'decoder'])
def test_block_gradients_match_finite_differences(block):
  # float64: through LayerNorm and softmax, float32 finite differences are off by ~5%.
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float64)
    memory = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float64)
    if block == 'ffn':
      module, args = attn.FeedForward(16), (x,)
    elif block == 'encoder':
      module, args = attn.EncoderBlock(num_heads=2, d_ff=16), (x,)
    else:
      module, args = attn.DecoderBlock(num_heads=2, d_ff=16), (x, memory)
    params = jax.tree.map(lambda a: a.astype(jnp.float64),
                          module.init(jax.random.PRNGKey(0), *args))
    check_grads(lambda p, *a: module.apply(p, *a), (params, *args), order=1, modes=['rev'],
                eps=1e-6, atol=1e-6, rtol=1e-6)
