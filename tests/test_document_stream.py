"""Documents as lanes of segments (memflax/data/document_stream.py) for models with a store."""

import numpy as np
import pytest

from memflax.data import load_text_corpus
from memflax.data.document_stream import DocumentLanes

RECORD = 64  # small records, so segments cross record boundaries
T = 16


def _text(seed: int, n: int) -> bytes:
  return bytes(np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8) % 90 + 32)


# Lengths chosen around multiples of T: a document that fills its last segment exactly,
# one a byte short, one a byte over, a one-byte document and longer ones.
LENGTHS = [1, T - 2, T - 1, T, 3 * T - 1, 70, 150, 200, 333, 41, 90, 128, 17, 64]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp('docs')
  for i, n in enumerate(LENGTHS):
    (root / f'doc_{i:02d}.py').write_bytes(_text(i, n))
  return load_text_corpus([root], data_dir=root.parent / 'data', record_length=RECORD)


def _documents(corpus, split):
  stream = np.concatenate(list(corpus.chunks(split))).tobytes()
  return stream.split(b'\0')[:-1]  # every document is closed by a NUL


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_segments_of_a_document_rebuild_it_with_its_separators(corpus, split):
  lanes = DocumentLanes(corpus, split, T)
  texts = _documents(corpus, split)
  assert lanes.num_documents == len(texts)
  for d, text in enumerate(texts):
    n = int(lanes.segments[d])
    tokens, lengths, reset = lanes.read_segments(np.full(n, d), np.arange(n))
    assert n == -(-(len(text) + 1) // T)
    assert reset.tolist() == [True] + [False] * (n - 1)
    # Token sequence NUL + text + NUL: inputs from the first, targets from the second.
    want = b'\0' + text + b'\0'
    targets = b''.join(tokens[j, 1:1 + lengths[j]].tobytes() for j in range(n))
    inputs = b''.join(tokens[j, :lengths[j]].tobytes() for j in range(n))
    assert targets == want[1:] and inputs == want[:-1]
    assert (lengths[:-1] == T).all() and 1 <= lengths[-1] <= T
    assert not tokens[-1, 1 + lengths[-1]:].any()  # padding is zero


def test_training_lanes_are_staggered_walks_of_one_shuffled_cycle(corpus):
  lanes = DocumentLanes(corpus, 'train', T)
  order, _ = lanes._cycle(5)
  assert sorted(order.tolist()) == list(range(lanes.num_documents))
  cycle = [(int(d), j) for d in order for j in range(int(lanes.segments[d]))]
  total = len(cycle)
  for batch in (3, lanes.num_documents + 5):  # more lanes than documents works too
    for step in (0, 1, total - 1, total, 5 * total + 7):
      documents, segments = lanes.positions(5, step, batch)
      for b in range(batch):
        assert (documents[b], segments[b]) == cycle[(b * total // batch + step) % total]
  # A reset exactly where a lane enters a document's first segment.
  _, _, reset = lanes.batch_for_step(5, 11, 3)
  documents, segments = lanes.positions(5, 11, 3)
  np.testing.assert_array_equal(reset, segments == 0)
  assert lanes._cycle(6)[0].tolist() != order.tolist()


def test_training_batches_are_a_pure_function_of_seed_and_step(corpus):
  a, b = DocumentLanes(corpus, 'train', T), DocumentLanes(corpus, 'train', T)
  for step in (0, 7, 12345):
    for x, y in zip(a.batch_for_step(3, step, 4), b.batch_for_step(3, step, 4)):
      np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.batch_for_step(3, 0, 4)[0], a.batch_for_step(4, 0, 4)[0])
  # Two processes take contiguous halves of the same global batch.
  whole = a.batch_for_step(3, 9, 4)
  halves = [a.batch_for_step(3, 9, 4, p, 2) for p in range(2)]
  for i in range(3):
    np.testing.assert_array_equal(np.concatenate([h[i] for h in halves]), whole[i])


@pytest.mark.parametrize('piece', [None, 3])
def test_validation_visits_every_segment_once_on_balanced_lanes(corpus, piece):
  lanes = DocumentLanes(corpus, 'validation', T)
  texts = _documents(corpus, 'validation')
  steps = list(lanes.validation_steps(2, piece_segments=piece))
  plan = lanes.validation_plan(2, piece_segments=piece)
  rebuilt, resets = [b'' for _ in range(2)], [[] for _ in range(2)]
  for tokens, lengths, reset in steps:
    for b in range(2):
      rebuilt[b] += tokens[b, 1:1 + lengths[b]].tobytes()
      resets[b].append(bool(reset[b]))
  for b in range(2):
    # Each piece is its segments' targets, in order; a reset where each piece begins.
    want, starts = b'', []
    for d, first, n in plan[b]:
      text = texts[d] + b'\0'
      want += text[first * T:(first + n) * T]
      starts += [True] + [False] * (n - 1)
    assert rebuilt[b] == want
    assert resets[b][:len(starts)] == starts and all(resets[b][len(starts):])  # idle: empty
  # Every document's every segment once, in pieces of at most `piece` segments.
  pieces = sorted(p for lane in plan for p in lane)
  for d in range(lanes.num_documents):
    mine = [(first, n) for doc, first, n in pieces if doc == d]
    assert sum(n for _, n in mine) == lanes.segments[d]
    assert all(n <= (piece or lanes.segments[d]) for _, n in mine)
  loads = [sum(n for _, _, n in lane) for lane in plan]
  assert len(steps) == max(loads)
  assert max(loads) - min(loads) <= max(n for _, _, n in pieces)
