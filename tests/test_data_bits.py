"""Bits per byte and the add-one bigram baseline, against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memflax.data import bigram_bits_per_byte, bigram_counts, bits_per_byte


def test_uniform_logits_cost_exactly_eight_bits():
  targets = jnp.arange(12).reshape(3, 4) * 20
  assert float(bits_per_byte(jnp.zeros((3, 4, 256)), targets)) == pytest.approx(8.0, abs=1e-5)


def test_constructed_probabilities():
  # The target gets probability 1/2 in row 0 and 1/8 in row 1: 1 and 3 bits, mean 2.
  probs = np.full((2, 256), 0.5 / 255)
  probs[0, 65], probs[1] = 0.5, 0.875 / 255
  probs[1, 66] = 0.125
  logits = jnp.log(jnp.asarray(probs, jnp.float32)) + 3.0  # logits are shift-invariant
  targets = jnp.array([65, 66])
  assert float(bits_per_byte(logits, targets)) == pytest.approx(2.0, abs=1e-5)
  mask = jnp.array([0.0, 1.0])
  assert float(bits_per_byte(logits, targets, mask)) == pytest.approx(3.0, abs=1e-5)


def test_matches_a_numpy_reference_and_jits():
  logits = jax.random.normal(jax.random.PRNGKey(0), (4, 9, 256)) * 3
  targets = jax.random.randint(jax.random.PRNGKey(1), (4, 9), 0, 256)
  x = np.asarray(logits, np.float64)
  log_p = x - x.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  ref = -np.take_along_axis(log_p, np.asarray(targets)[..., None], -1).mean() / math.log(2)
  assert float(jax.jit(bits_per_byte)(logits, targets)) == pytest.approx(ref, rel=1e-5)


def test_bigram_counts_pair_bytes_across_chunks():
  counts = bigram_counts([np.frombuffer(b'a', np.uint8), np.zeros(0, np.uint8),
                          np.frombuffer(b'ab', np.uint8)])  # the stream 'aab'
  assert counts.sum() == 2 and counts[ord('a'), ord('a')] == 1 and counts[ord('a'), ord('b')] == 1


def test_bigram_bits_per_byte_by_hand():
  counts = bigram_counts([np.frombuffer(b'aab', np.uint8)])
  # p(b|a) = (1+1)/(2+256) = 1/129; row 'b' is empty, so p(a|b) = 1/256.
  windows = np.frombuffer(b'abba', np.uint8).reshape(2, 2)  # targets: b after a, a after b
  expected = (math.log2(129) + 8) / 2
  assert bigram_bits_per_byte(counts, windows) == pytest.approx(expected, abs=1e-12)
  batches = iter([windows[:1], windows[1:]])  # an iterable of batches gives the same mean
  assert bigram_bits_per_byte(counts, batches) == pytest.approx(expected, abs=1e-12)
  # p(a|a) = (1+1)/258, over a window with two targets.
  assert bigram_bits_per_byte(counts, np.frombuffer(b'aaa', np.uint8)[None]) == \
      pytest.approx(math.log2(129), abs=1e-12)
