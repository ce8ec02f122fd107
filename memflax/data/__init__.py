"""Fixed datasets as TFDS builders in array_record format, read without TensorFlow.

Byte-level language modelling on local text files (default: the Python standard
library's own source, present on every install, so nothing is downloaded):

  corpus = load_text_corpus(['my/texts'], data_dir='/tmp/datasets')  # builds once
  batch = corpus.batch_for_step(seed, step, batch_size, seq_len)  # uint8 [B, T+1]
  for windows in corpus.validation_batches(batch_size, seq_len): ...
  baseline = bigram_bits_per_byte(bigram_counts(corpus.chunks('train')),
                                  corpus.validation_batches(64, seq_len))

Files: corpus_files.py (what goes in: scan, validate, split, fingerprint),
text_builder.py (the TFDS builder and load_text_corpus), byte_batches.py (random
access and batches), bits.py (bits per byte, bigram baseline).
"""

from memflax.data.bits import bigram_bits_per_byte, bigram_counts, bits_per_byte
from memflax.data.byte_batches import ByteCorpus
from memflax.data.corpus_files import CorpusError

_FROM_TEXT_BUILDER = ('DEFAULT_DATA_DIR', 'TextCorpus', 'load_text_corpus')


def __getattr__(name):
  # text_builder imports TFDS (seconds); load it when one of its names is first used, so
  # runs without text never pay for it.
  if name in _FROM_TEXT_BUILDER:
    from memflax.data import text_builder
    return getattr(text_builder, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['ByteCorpus', 'CorpusError', 'DEFAULT_DATA_DIR', 'TextCorpus', 'bigram_bits_per_byte',
           'bigram_counts', 'bits_per_byte', 'load_text_corpus']
