"""The corpus a run's config names (`config.data`), built on first use and then reused."""

from __future__ import annotations

from memflax.data.byte_batches import ByteCorpus


def _items(text: str) -> list[str]:
  return [item.strip() for item in str(text).split(',') if item.strip()]


def corpus_for(config) -> ByteCorpus:
  """config.data.paths: comma-separated files/directories ('' = the Python standard
  library's sources); config.data.dir: where built datasets live ('' = the default);
  config.data.suffixes: file suffixes taken from directories. Raises CorpusError (one
  line) for a missing path, a binary file, an empty corpus or a window longer than a split.
  """
  # Imported here: TFDS takes seconds to import and only text tasks need it.
  from memflax.data.text_builder import load_text_corpus
  corpus = load_text_corpus(_items(config.data.paths) or None, data_dir=config.data.dir or None,
                            suffixes=tuple(_items(config.data.suffixes)))
  corpus.check_seq_len(config.task.seq_length)
  return corpus
