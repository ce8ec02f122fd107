"""Byte-level language modelling on a text corpus (memflax.data: TFDS array_record).

Unlike the algorithmic tasks, batches come from a dataset, so this task is
`host_fed`: the host reads the window bytes of step s (a pure function of
(seed, s), see memflax.data.byte_batches) and the jitted step turns them into
model inputs with `batch_from_tokens`. Only the uint8 bytes cross to the device.

Layout of one window of seq_length bytes w[0..T]:
  inputs  [T, 256]  one_hot(w[0..T-1])   (models take float vectors)
  targets [T]       w[1..T]              (int32 byte ids)
  mask    [T]       1 on every position (0 on padding rows of a short last eval batch)

Loss: softmax cross-entropy per target byte in nats, averaged over the batch's
bytes; `bits_per_byte` is the same in bits (every window has T bytes, so per-device
means average exactly to the global mean).

With `stream_documents` (for models that carry a store across segments, e.g.
knn_transformer), row b is a lane reading its documents segment after segment
(memflax.data.document_stream): the batch also has `reset` [B] (first segment of a
document: start an empty store) and a mask that drops the padding after a document's
end. The training loss is then divided by the number of positions B·T rather than by
the valid bytes, so that per-device means still average exactly to the global one
(padding is one partial segment per document, well under 1 % of positions on the
default corpus); validation bits per byte count valid bytes exactly.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
VOCAB = 256


@dataclasses.dataclass(frozen=True)
class Task:
  seq_length: int = 256
  stream_documents: bool = False
  # Validation on document lanes reads documents in pieces of at most this many segments,
  # each from an empty store: one long file would otherwise leave all lanes but one idle
  # for its whole length (the standard library has a 757 KB one). 512 segments of 128
  # bytes hold 64K entries, the largest store measured.
  eval_piece_segments: int = 512

  def __post_init__(self):
    if isinstance(self.eval_piece_segments, bool) or not isinstance(
        self.eval_piece_segments, int) or self.eval_piece_segments < 1:
      raise ValueError('task.eval_piece_segments must be a positive integer, got '
                       f'{self.eval_piece_segments!r}')

  primary_metric = 'bits_per_byte'
  higher_is_better = False
  host_fed = True
  range_fields = ()
  size_name = 'context'

  @property
  def input_size(self) -> int:
    return VOCAB

  @property
  def output_size(self) -> int:
    return VOCAB

  def batch_from_tokens(self, tokens: Array, row_mask: Array | None = None,
                        lengths: Array | None = None, reset: Array | None = None
                        ) -> dict[str, Array]:
    """tokens uint8 [B, T+1] (row_mask [B], optional; for document streams lengths int [B]
    valid targets per row and reset bool [B]) -> inputs [B,T,256], targets, mask [B,T]
    (and reset [B])."""
    tokens = tokens.astype(jnp.int32)
    mask = jnp.ones(tokens[:, 1:].shape, jnp.float32)
    if row_mask is not None:
      mask = mask * row_mask[:, None].astype(jnp.float32)
    if lengths is not None:
      mask = mask * (jnp.arange(mask.shape[1]) < lengths[:, None]).astype(jnp.float32)
    batch = dict(inputs=jax.nn.one_hot(tokens[:, :-1], VOCAB, dtype=jnp.float32),
                 targets=tokens[:, 1:], mask=mask)
    if reset is not None:
      batch['reset'] = jnp.asarray(reset, bool)
    return batch

  def make_batch(self, key: Array, batch_size: int, **unused) -> dict[str, Array]:
    """Uniform random bytes in the batch layout: shapes for init and smoke tests only
    (training batches come from the corpus)."""
    del unused
    tokens = jax.random.randint(key, (batch_size, self.seq_length + 1), 0, VOCAB)
    return self.batch_from_tokens(tokens)

  def token_losses(self, logits: Array, batch: dict[str, Array]) -> Array:
    """Cross-entropy in nats per target byte [B, T], zero where mask is 0."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
    return losses * batch['mask']

  def loss_and_metrics(self, logits: Array, batch: dict[str, Array]) -> tuple[Array, dict]:
    """logits [B, T, 256] -> (mean nats per byte, {'loss', 'bits_per_byte', 'accuracy'})."""
    count = jnp.maximum(jnp.sum(batch['mask']), 1.0)
    if 'reset' in batch:  # document lanes: per position, see the module docstring
      count = float(batch['mask'].size)
    loss = jnp.sum(self.token_losses(logits, batch)) / count
    hits = (jnp.argmax(logits, -1) == batch['targets']) * batch['mask']
    return loss, {'loss': loss, 'bits_per_byte': loss / math.log(2),
                  'accuracy': jnp.sum(hits) / count}
