"""What a checkpoint or snapshot must read back as: a format version and content digests.

orbax catches a truncated or zeroed array file, but a flipped bit inside a compressed
chunk can decompress to different numbers and load silently (measured on an NTM
checkpoint: one flipped bit in the ocdbt data file restored parameters that differ from
those saved). So every checkpoint and snapshot carries, in the same atomic orbax write,
a record of the SHA-256 of each array's bytes (with dtype and shape) and of each JSON
document; a restore recomputes them and refuses anything that differs.

The record also carries `format_version`: the layout of what memflax saves. A reader
refuses a record from a newer format with a clear message instead of misreading it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

# 1: TrainState with nonfinite_at and skipped_updates; integrity record in every save.
FORMAT_VERSION = 1
ITEM = 'integrity'  # the orbax item (a JSON document) that holds the record


class CorruptError(ValueError):
  """Saved content does not match its record (or the record is unreadable)."""


class FormatError(ValueError):
  """The record is of a format this memflax cannot read (newer, or none at all)."""


def host_array(leaf: Any) -> np.ndarray:
  """This process's full copy of a leaf. Most train state is replicated, so the first
  addressable shard of a global array is the whole array, on every process; a model's
  external store is split by batch row, and is gathered (across processes a collective:
  every process digests the same state at the same checkpoint step)."""
  if isinstance(leaf, jax.Array):
    shard = leaf.addressable_data(0)
    if shard.shape == leaf.shape:
      return np.asarray(shard)
    if leaf.is_fully_addressable:
      return np.asarray(leaf)
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return np.asarray(leaf)


def digest_array(leaf: Any) -> str:
  array = np.ascontiguousarray(host_array(leaf))
  h = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
  h.update(array.tobytes())
  return h.hexdigest()


def first_nonfinite(tree: Any) -> str | None:
  """The path of the first floating leaf holding NaN/inf, or None."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = host_array(leaf)
    if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
      return jax.tree_util.keystr(path)
  return None


def digest_tree(tree: Any) -> dict[str, str]:
  """{leaf path: digest} of a pytree of arrays."""
  return {jax.tree_util.keystr(path): digest_array(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def digest_document(document: Any) -> str:
  """Digest of a JSON-able value, independent of key order and formatting."""
  text = json.dumps(document, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()


def make_record(trees: dict[str, Any], documents: dict[str, Any]) -> dict:
  """The record to save beside `trees` (name -> pytree) and `documents` (name -> JSON)."""
  return dict(format_version=FORMAT_VERSION,
              trees={name: digest_tree(tree) for name, tree in trees.items()},
              documents={name: digest_document(doc) for name, doc in documents.items()})


def read_record(text: str | None) -> dict:
  """Parses a record; FormatError when there is none or it is from a newer format,
  CorruptError when it cannot be read."""
  if text is None:
    raise FormatError(f'it has no {ITEM} record (written by a memflax before checkpoint '
                      f'format {FORMAT_VERSION}); this memflax cannot resume it')
  try:
    record = json.loads(text)
    version = record['format_version']
    if not isinstance(version, int) or not isinstance(record['trees'], dict) \
        or not isinstance(record['documents'], dict):
      raise TypeError('malformed')
  except (ValueError, KeyError, TypeError) as e:
    raise CorruptError(f'its {ITEM} record is unreadable ({type(e).__name__})') from None
  if version > FORMAT_VERSION:
    raise FormatError(f'it was written in checkpoint format {version} by a newer memflax; '
                      f'this one reads format {FORMAT_VERSION} and older: upgrade memflax')
  return record


def check_document(record: dict, name: str, document: Any) -> None:
  if record['documents'].get(name) != digest_document(document):
    raise CorruptError(f'its {name} document does not match its digest')


def check_tree(record: dict, name: str, tree: Any) -> None:
  """CorruptError naming the first leaf whose bytes differ from the record."""
  expected = record['trees'].get(name)
  if expected is None:
    raise CorruptError(f'its record has no digest of {name}')
  actual = digest_tree(tree)
  if set(actual) != set(expected):
    raise CorruptError(f'its {name} leaves differ from its record')
  for path, digest in actual.items():
    if expected[path] != digest:
      raise CorruptError(f'{name}{path} does not match its digest')
