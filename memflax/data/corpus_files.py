"""Turns the paths a user names into an ordered, validated, fingerprinted list of documents.

No TFDS here: this is the part that decides *what* goes into a byte corpus, so the
builder (text_builder.py) only has to write it.

Rules
  * A path that does not exist is an error. A file named directly is always used; a
    directory is walked recursively (symlinks not followed) for files ending in one of
    `suffixes`, skipping hidden directories and those in `exclude_dirs`, and its files
    are taken in order of relative path. A file reached twice is used once.
  * A document must be text: a file holding a NUL byte or bytes that are not valid
    UTF-8 is rejected (CorpusError naming the file) rather than skipped, because a
    silently dropped file changes the corpus without anyone noticing. NUL is then free
    to serve as the document separator in the byte stream.
  * Empty files are skipped (they carry no text; the stdlib has many empty
    `__init__.py`). No non-empty file at all is an error.
  * Split by document: a document goes to 'validation' when the SHA-256 of its name
    (path relative to its root, '/'-separated) falls in the lowest VALIDATION_FRACTION
    of the hash range, so the split does not depend on file order, content or on which
    other files exist. At least one document per split is forced (lowest hash →
    validation, highest → train). A lone file is cut at the first line break after
    95% of its bytes instead.
  * The fingerprint hashes everything that decides the stored bytes (names, byte
    ranges, content digests, splits, record length, layout version), so identical
    sources reuse one build and any change in content gets its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sysconfig
from collections.abc import Iterable, Sequence

VALIDATION_FRACTION = 0.05
# Only for the default corpus: keeps it to the library proper (~12 MB on CPython 3.11).
STDLIB_EXCLUDE_DIRS = ('site-packages', 'dist-packages', 'test', 'tests', 'idle_test',
                       '__pycache__')


class CorpusError(ValueError):
  """Unusable corpus input; the message is one line naming the culprit."""


@dataclasses.dataclass(frozen=True)
class Document:
  path: str    # absolute path of the file
  name: str    # path relative to its root, '/'-separated; decides the split
  start: int   # the document is bytes [start, end) of the file
  end: int
  digest: str  # blake2b of those bytes, checked again while building
  split: str   # 'train' or 'validation'


def stdlib_paths() -> list[str]:
  """The default corpus: the running interpreter's standard library source directory."""
  return [sysconfig.get_paths()['stdlib']]


def read_range(path: str, start: int, end: int) -> bytes:
  with open(path, 'rb') as f:
    f.seek(start)
    return f.read(end - start)


def digest(data: bytes) -> str:
  return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_text(path: str, data: bytes) -> None:
  if b'\0' in data:
    raise CorpusError(f'{path}: contains a NUL byte at offset {data.index(0)}; only UTF-8 '
                      'text files can go in a byte corpus (binary file?)')
  try:
    data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise CorpusError(f'{path}: not valid UTF-8 at byte {e.start}; only UTF-8 text files '
                      'can go in a byte corpus') from None


def find_files(paths: Sequence[str], suffixes: Sequence[str],
               exclude_dirs: Iterable[str] = ()) -> list[tuple[str, str]]:
  """(absolute path, name) of every candidate file, in corpus order, duplicates dropped."""
  suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
  exclude = set(exclude_dirs)
  found, seen = [], set()
  for root in map(os.path.abspath, map(os.fspath, paths)):
    if not os.path.exists(root):
      raise CorpusError(f'corpus path does not exist: {root}')
    if os.path.isfile(root):
      candidates = [(root, os.path.basename(root))]
    else:
      candidates = []
      for parent, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in exclude and not d.startswith('.'))
        for f in sorted(files):
          if f.endswith(suffixes):
            full = os.path.join(parent, f)
            candidates.append((full, os.path.relpath(full, root).replace(os.sep, '/')))
      candidates.sort(key=lambda c: c[1])  # by name: 'a/x.py' < 'b.py', unlike walk order
    for full, name in candidates:
      real = os.path.realpath(full)
      if real not in seen:
        seen.add(real)
        found.append((full, name))
  return found


def _hash_score(name: str) -> float:
  """A fixed pseudo-random number in [0, 1) for a document name."""
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], 'big') / 2**64


def _split_one(path: str, name: str, data: bytes) -> list[Document]:
  """A lone file: train = the first ~95%, validation = the rest, cut after a newline."""
  if len(data) < 2:
    raise CorpusError(f'{path}: a one-file corpus needs at least 2 bytes to make a train and '
                      'a validation split')
  cut = max(int(len(data) * (1 - VALIDATION_FRACTION)), 1)
  newline = data.find(b'\n', cut)
  if 0 <= newline < len(data) - 1:
    cut = newline + 1
  return [Document(path, name, 0, cut, digest(data[:cut]), 'train'),
          Document(path, name, cut, len(data), digest(data[cut:]), 'validation')]


def scan_documents(paths: Sequence[str], suffixes: Sequence[str] = ('.py',),
                   exclude_dirs: Iterable[str] = ()) -> list[Document]:
  """Reads and validates every file once; returns the documents in corpus order."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  files = []
  for full, name in find_files(paths, suffixes, exclude_dirs):
    with open(full, 'rb') as f:
      data = f.read()
    check_text(full, data)
    if data:
      files.append((full, name, data))
  if not files:
    raise CorpusError(f'empty corpus: no non-empty files ending in {list(suffixes)} under '
                      f'{[os.fspath(p) for p in paths]}')
  if len(files) == 1:
    return _split_one(*files[0])
  scores = [_hash_score(name) for _, name, _ in files]
  val = [s < VALIDATION_FRACTION for s in scores]
  if not any(val):
    val[scores.index(min(scores))] = True
  if all(val):
    val[scores.index(max(scores))] = False
  return [Document(full, name, 0, len(data), digest(data), 'validation' if v else 'train')
          for (full, name, data), v in zip(files, val)]


def fingerprint(documents: Sequence[Document], record_length: int, version: str) -> str:
  """Hex digest of everything that decides the stored records (not where files live)."""
  key = [version, record_length,
         [(d.name, d.start, d.end, d.digest, d.split) for d in documents]]
  return hashlib.blake2b(json.dumps(key).encode(), digest_size=10).hexdigest()
