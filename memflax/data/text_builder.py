"""TFDS builder for byte-level language modelling on local text files (array_record, no TF).

Record layout. Each split is one byte stream: its documents in corpus order, each
followed by SEPARATOR (NUL, which corpus_files guarantees never occurs in the text).
The stream is cut into records of `record_length` bytes; record i holds stream bytes
[i·L, (i+1)·L), only a split's last record may be shorter. So byte offset → record is
one division, and random access to any window is one or two record reads. Shuffling
on write is disabled so record index = position in the stream.

Where it lives: `data_dir/memflax_text_corpus/fp_<fingerprint>/1.0.0/`. The fingerprint
(corpus_files.fingerprint) is the builder config name, so the same sources reuse one
build and different sources never collide. TFDS writes into an `incomplete.*` sibling
directory and renames it only after every split and dataset_info.json are written,
and deletes it when generation raises; a build killed outright can leave an
`incomplete.*` directory behind, which nothing ever reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from memflax.data import corpus_files
from memflax.data.byte_batches import ByteCorpus
from memflax.data.corpus_files import CorpusError, Document

SPLITS = ('train', 'validation')
SEPARATOR = 0
RECORD_LENGTH = 4096
DEFAULT_DATA_DIR = '~/.cache/memflax/datasets'


@dataclasses.dataclass
class TextCorpusConfig(tfds.core.BuilderConfig):
  # repr=False: TFDS logs the config, and a corpus has hundreds of documents.
  documents: tuple[Document, ...] = dataclasses.field(default=(), repr=False)
  record_length: int = RECORD_LENGTH


class TextCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Byte-level LM corpus; build it with `load_text_corpus`, which makes the config."""

  name = 'memflax_text_corpus'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'NUL-separated documents in fixed-length uint8 records.'}
  # Nothing to download, so no checksums file; TFDS's search for one would need the
  # importlib_resources package when the builder lives in a package like this one.
  url_infos = None

  def _info(self):
    # DatasetInfo directly: dataset_info_from_configs would look for README/CITATION
    # files next to this module.
    return tfds.core.DatasetInfo(
        builder=self,
        description='Bytes of local text files, NUL after each document, cut into '
                    'fixed-length records.',
        features=tfds.features.FeaturesDict({
            # BYTES encoding stores the raw bytes; the default would upcast to int64.
            'bytes': tfds.features.Tensor(shape=(None,), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES)}),
        disable_shuffling=True,  # record index must equal position in the stream
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    config = self.builder_config
    docs = {s: [d for d in config.documents if d.split == s] for s in SPLITS}
    self.info.metadata.update(
        record_length=config.record_length, separator=SEPARATOR,
        num_bytes={s: sum(d.end - d.start + 1 for d in docs[s]) for s in SPLITS},
        documents={s: [d.name for d in docs[s]] for s in SPLITS})
    return {s: self._generate_examples(docs[s]) for s in SPLITS}

  def _generate_examples(self, documents: Sequence[Document]):
    length = self.builder_config.record_length
    pending, index = b'', 0
    for doc in documents:
      data = corpus_files.read_range(doc.path, doc.start, doc.end)
      if corpus_files.digest(data) != doc.digest:
        # The fingerprint promised other bytes; writing these would poison the cache.
        raise CorpusError(f'{doc.path} changed while the corpus was being built; run again')
      pending += data + bytes([SEPARATOR])
      full = len(pending) // length * length
      for at in range(0, full, length):
        yield index, {'bytes': np.frombuffer(pending, np.uint8, length, at)}
        index += 1
      pending = pending[full:]
    if pending:
      yield index, {'bytes': np.frombuffer(pending, np.uint8)}


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS warns on every custom config: noise in a log. Its progress bars over the build are
  kept for a terminal only; in a log, load_text_corpus prints one line of its own instead."""
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  tfds.display_progress_bar(sys.stderr.isatty() and jax.process_index() == 0)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def load_text_corpus(paths: str | Sequence[str] | None = None, *,
                     data_dir: str | os.PathLike | None = None,
                     suffixes: Sequence[str] = ('.py',),
                     exclude_dirs: Iterable[str] | None = None,
                     record_length: int = RECORD_LENGTH) -> ByteCorpus:
  """Builds the corpus of `paths` into `data_dir` unless already built; opens it.

  paths: files and/or directories (walked for `suffixes`); None = the Python standard
    library, minus site-packages and test directories (corpus_files.STDLIB_EXCLUDE_DIRS).
  data_dir: where datasets live; default ~/.cache/memflax/datasets.
  Raises CorpusError (one line) for a missing path, a binary file or an empty corpus.
  """
  if paths is None:
    paths = corpus_files.stdlib_paths()
    exclude_dirs = corpus_files.STDLIB_EXCLUDE_DIRS if exclude_dirs is None else exclude_dirs
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  if not isinstance(record_length, int) or record_length < 1:
    raise CorpusError(f'record_length must be a positive int, got {record_length!r}')
  data_dir = os.path.expanduser(os.fspath(data_dir or DEFAULT_DATA_DIR))
  documents = corpus_files.scan_documents(paths, suffixes, exclude_dirs or ())
  config = TextCorpusConfig(
      name='fp_' + corpus_files.fingerprint(documents, record_length, str(TextCorpus.VERSION)),
      description='sources: ' + ', '.join(os.path.abspath(os.fspath(p)) for p in paths),
      documents=tuple(documents), record_length=record_length)

  def make_builder():
    with _quiet_tfds():
      return TextCorpus(config=config, data_dir=data_dir, file_format='array_record')

  builder = make_builder()
  built = not (builder.data_path / 'dataset_info.json').exists()
  if built:
    # Downloads dir: TFDS makes one even with nothing to download; keep data_dir clean.
    with tempfile.TemporaryDirectory() as downloads:
      try:
        with _quiet_tfds():
          builder.download_and_prepare(download_dir=downloads)
      except OSError:
        # A concurrent build of the same sources won the final rename: use its result.
        if not (builder.data_path / 'dataset_info.json').exists():
          raise
        builder, built = make_builder(), False
  corpus = ByteCorpus.from_builder(builder, built=built)
  if built and jax.process_index() == 0:
    print(f'memflax: built the text corpus ({corpus.num_bytes["train"]:,} training bytes, '
          f'{corpus.num_bytes["validation"]:,} validation bytes) in {builder.data_path}',
          flush=True)
  return corpus
