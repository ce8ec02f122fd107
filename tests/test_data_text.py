"""The byte-level text corpus: TFDS build round trip, reuse, atomicity, batches, bad input."""

import os
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from memflax.data import CorpusError, bigram_bits_per_byte, bigram_counts, load_text_corpus
from memflax.data import corpus_files

RECORD = 64  # small records, so windows and documents cross record boundaries


def write_files(root, files):
  for name, data in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  return root


def text(seed, n):
  """About n bytes of varied UTF-8 text (with a 2-byte character), no NULs."""
  alphabet = list('abcdefghij \n()=:é')
  return ''.join(np.random.default_rng(seed).choice(alphabet, n)).encode()


FILES = {f'pkg/mod_{i}.py': text(i, 150 + 97 * i) for i in range(8)}
FILES.update({'top.py': text(99, 700), 'pkg/notes.txt': b'not python', 'pkg/empty.py': b''})


@pytest.fixture
def corpus_dir(tmp_path):
  return write_files(tmp_path / 'src', FILES)


def split_stream(corpus, split):
  return np.concatenate(list(corpus.chunks(split))).tobytes()


def test_round_trip_bytes_equal_the_files_in_order(corpus_dir, tmp_path):
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  assert corpus.built
  names = sorted(n for n in FILES if n.endswith('.py') and FILES[n])  # walk order = sorted
  assert corpus.documents['train'] and corpus.documents['validation']
  assert sorted(corpus.documents['train'] + corpus.documents['validation']) == names
  for split in ('train', 'validation'):
    docs = corpus.documents[split]
    assert docs == sorted(docs)  # corpus order kept within a split
    expected = b''.join(FILES[n] + b'\0' for n in docs)
    assert split_stream(corpus, split) == expected
    assert corpus.num_bytes[split] == len(expected)
    lengths = [len(corpus.sources[split][i]['bytes']) for i in range(len(corpus.sources[split]))]
    assert all(n == RECORD for n in lengths[:-1]) and 1 <= lengths[-1] <= RECORD
  # Random access: an arbitrary window that spans records equals the stream slice.
  stream = split_stream(corpus, 'train')
  assert corpus.read('train', 50, 100).tobytes() == stream[50:150]
  assert corpus.read('train', len(stream) - 3, 3).tobytes() == stream[-3:]
  with pytest.raises(IndexError):
    corpus.read('train', len(stream) - 3, 4)


def test_split_rule_is_the_documented_hash(corpus_dir, tmp_path):
  import hashlib
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  score = {n: int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], 'big') / 2**64
           for n in corpus.documents['train'] + corpus.documents['validation']}
  by_hash = {n for n, s in score.items() if s < corpus_files.VALIDATION_FRACTION}
  expected = by_hash or {min(score, key=score.get)}  # at least one validation document
  assert set(corpus.documents['validation']) == expected


def test_second_load_reuses_the_build(corpus_dir, tmp_path):
  first = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  info = os.path.join(first.path, 'dataset_info.json')
  mtime = os.stat(info).st_mtime_ns
  second = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  assert not second.built and second.path == first.path
  assert os.stat(info).st_mtime_ns == mtime
  assert split_stream(second, 'train') == split_stream(first, 'train')


def test_different_sources_build_a_different_dataset(corpus_dir, tmp_path):
  data = tmp_path / 'data'
  base = load_text_corpus([corpus_dir], data_dir=data, record_length=RECORD)
  other_record = load_text_corpus([corpus_dir], data_dir=data, record_length=RECORD * 2)
  (corpus_dir / 'pkg/mod_3.py').write_bytes(b'changed content\n')
  changed = load_text_corpus([corpus_dir], data_dir=data, record_length=RECORD)
  paths = {base.path, other_record.path, changed.path}
  assert len(paths) == 3 and changed.built and other_record.built
  assert all(os.path.exists(os.path.join(p, 'dataset_info.json')) for p in paths)


def test_failed_build_leaves_nothing_behind(corpus_dir, tmp_path, monkeypatch):
  data = tmp_path / 'data'
  real_read, calls = corpus_files.read_range, []

  def read_then_change(path, start, end):  # a file edited while the build runs
    calls.append(path)
    data_ = real_read(path, start, end)
    return data_ + b'!' if len(calls) == 3 else data_

  monkeypatch.setattr(corpus_files, 'read_range', read_then_change)
  with pytest.raises(CorpusError, match='changed while the corpus was being built'):
    load_text_corpus([corpus_dir], data_dir=data, record_length=RECORD)
  assert len(calls) == 3  # it failed half-way, after writing records
  left = [p.name for p in data.rglob('*')]
  assert not [n for n in left if 'incomplete' in n or n.endswith('.json') or 'array_record' in n]
  monkeypatch.undo()
  corpus = load_text_corpus([corpus_dir], data_dir=data, record_length=RECORD)
  assert corpus.built and split_stream(corpus, 'train')


KILLED_BUILD = """
import sys, time
from memflax.data import corpus_files, load_text_corpus
real_read, calls = corpus_files.read_range, []
def read_then_hang(path, start, end):  # hang on the last document, train split written
  calls.append(path)
  if len(calls) == int(sys.argv[3]):
    open(sys.argv[4], 'w').close()
    time.sleep(120)
  return real_read(path, start, end)
corpus_files.read_range = read_then_hang
load_text_corpus([sys.argv[1]], data_dir=sys.argv[2], record_length=64)
"""


def test_build_killed_half_way_is_never_trusted(corpus_dir, tmp_path):
  data, marker = tmp_path / 'data', tmp_path / 'hanging'
  documents = sum(1 for n, d in FILES.items() if n.endswith('.py') and d)
  args = [str(corpus_dir), str(data), str(documents), str(marker)]
  proc = subprocess.Popen([sys.executable, '-c', KILLED_BUILD, *args],
                          cwd=os.path.dirname(os.path.dirname(__file__)),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 60
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    assert marker.exists(), 'the build never reached its last document'
    partial = [p for p in data.rglob('*') if 'incomplete' in p.name]
    assert partial and list(partial[0].glob('*train.array_record*'))  # half-built on disk
  finally:
    proc.kill()  # SIGKILL: no cleanup handlers run
    proc.wait()
  corpus = load_text_corpus([corpus_dir], data_dir=data, record_length=RECORD)
  assert corpus.built  # the debris was not mistaken for a finished build
  expected = b''.join(FILES[n] + b'\0' for n in corpus.documents['train'])
  assert split_stream(corpus, 'train') == expected


def test_batch_for_step_is_a_pure_function_of_seed_and_step(corpus_dir, tmp_path):
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  reopened = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  a = corpus.batch_for_step(seed=7, step=3, batch_size=16, seq_len=40)
  assert a.shape == (16, 41) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, reopened.batch_for_step(7, 3, 16, 40))  # after "resume"
  assert not np.array_equal(a, corpus.batch_for_step(7, 4, 16, 40))
  assert not np.array_equal(a, corpus.batch_for_step(8, 3, 16, 40))
  # Every row is the stream window at its start offset; starts are in range and vary.
  stream = split_stream(corpus, 'train')
  starts = corpus.window_starts(7, 3, 16, 40)
  assert starts.min() >= 0 and starts.max() + 41 <= len(stream) and len(set(starts)) > 8
  for row, s in zip(a, starts):
    assert row.tobytes() == stream[s:s + 41]
  # Per-process shards are blocks of the same global batch.
  shards = [corpus.batch_for_step(7, 3, 16, 40, process_index=i, process_count=4)
            for i in range(4)]
  np.testing.assert_array_equal(np.concatenate(shards), a)


def test_windows_cover_the_whole_train_split_over_many_steps(corpus_dir, tmp_path):
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  n = corpus.num_bytes['train']
  starts = np.concatenate([corpus.window_starts(0, s, 64, 10) for s in range(50)])
  assert starts.min() == 0 and starts.max() == n - 11  # both ends reachable


def test_validation_batches_walk_the_split_in_order(corpus_dir, tmp_path):
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  stream = split_stream(corpus, 'validation')
  seq_len = 17
  batches = list(corpus.validation_batches(batch_size=4, seq_len=seq_len))
  windows = np.concatenate(batches)
  count = (len(stream) - 1) // seq_len
  assert windows.shape == (count, seq_len + 1) == (corpus.num_validation_windows(seq_len), 18)
  assert all(len(b) == 4 for b in batches[:-1])
  # Targets tile the split: every byte after the first is scored exactly once.
  assert windows[:, 1:].tobytes() == stream[1:1 + count * seq_len]
  assert windows[:, 0].tobytes() == stream[0:count * seq_len:seq_len]
  assert len(list(corpus.validation_batches(4, seq_len, max_batches=2))) == 2
  np.testing.assert_array_equal(np.concatenate(list(corpus.validation_batches(4, seq_len, 2))),
                                windows[:8])


def test_bigram_baseline_on_the_built_corpus(corpus_dir, tmp_path):
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  stream = np.frombuffer(split_stream(corpus, 'train'), np.uint8).astype(int)
  counts = bigram_counts(corpus.chunks('train', records_per_chunk=3))  # pairs across chunks
  expected = np.zeros((256, 256), np.int64)
  np.add.at(expected, (stream[:-1], stream[1:]), 1)
  np.testing.assert_array_equal(counts, expected)
  bpb = bigram_bits_per_byte(counts, corpus.validation_batches(8, 32))
  assert 1.0 < bpb < 8.0  # text this random still beats uniform bytes


def test_one_file_corpus_is_cut_at_a_line_break(tmp_path):
  lines = b''.join(b'line %03d of the only file\n' % i for i in range(100))
  path = write_files(tmp_path / 'src', {'book.txt': lines}) / 'book.txt'
  corpus = load_text_corpus([path], data_dir=tmp_path / 'data', record_length=RECORD)
  train, val = split_stream(corpus, 'train'), split_stream(corpus, 'validation')
  assert train[:-1] + val[:-1] == lines and train.endswith(b'\n\0')
  assert 0.04 < len(val) / len(lines) < 0.07


def test_real_files_from_the_standard_library(tmp_path):
  json_dir = os.path.join(sysconfig.get_paths()['stdlib'], 'json')
  corpus = load_text_corpus(json_dir, data_dir=tmp_path / 'data')
  assert corpus.num_bytes['train'] > 10_000
  assert b'def ' in corpus.batch_for_step(0, 0, 8, 512).tobytes()


def one_line_error(excinfo):
  message = str(excinfo.value)
  assert message and '\n' not in message
  return message


@pytest.mark.parametrize('files, match', [
    ({'a.py': b'x = 1\n', 'b.py': b'y = 2\0\n'}, r'b\.py: contains a NUL byte'),
    ({'a.py': b'x = 1\n', 'b.py': b'caf\xe9 = 2\n'}, r'b\.py: not valid UTF-8 at byte 3'),
    ({'a.txt': b'only text files\n'}, 'empty corpus'),
    ({'a.py': b'', 'b.py': b''}, 'empty corpus'),
    ({'a.py': b'x'}, 'needs at least 2 bytes'),
])
def test_bad_files_raise_one_line_corpus_errors(tmp_path, files, match):
  src = write_files(tmp_path / 'src', files)
  with pytest.raises(CorpusError, match=match) as excinfo:
    load_text_corpus([src], data_dir=tmp_path / 'data')
  one_line_error(excinfo)
  assert not (tmp_path / 'data').exists() or not any((tmp_path / 'data').rglob('*.json'))


def test_missing_path_raises(tmp_path):
  with pytest.raises(CorpusError, match='corpus path does not exist') as excinfo:
    load_text_corpus([tmp_path / 'nowhere'], data_dir=tmp_path / 'data')
  one_line_error(excinfo)


def test_too_long_seq_len_raises(corpus_dir, tmp_path):
  corpus = load_text_corpus([corpus_dir], data_dir=tmp_path / 'data', record_length=RECORD)
  too_long = corpus.num_bytes['validation']  # needs one byte more than validation holds
  for make in (lambda: corpus.batch_for_step(0, 0, 2, too_long),
               lambda: next(corpus.validation_batches(2, too_long))):
    with pytest.raises(CorpusError, match='the validation split has only') as excinfo:
      make()
    one_line_error(excinfo)
  corpus.batch_for_step(0, 0, 2, too_long - 1)  # the longest that fits
