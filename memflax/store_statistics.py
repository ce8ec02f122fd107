"""What a model's external store does on the validation documents: how full it is when read,
how close the retrieved keys are, how much each head relies on it.

Read from the statistics the kNN memory blocks sow into 'intermediates'
(memflax.nn.knn_memory.KNNMemoryAttention): per head the gate g_h (weight of the
memory read against local attention) and the mean query·key score of the valid hits
(with normalised keys, the cosine similarity: 1 − ½‖q̂ − k̂‖², so a distance follows),
and per call the mean occupancy min(count, N)/N over the rows' stores (a lane with no
document left idles with an empty store and counts as 0). Validation
documents are read lane by lane from an empty store, as for validation bits per byte.
"""

from __future__ import annotations

import jax
import numpy as np


def _flatten(tree, prefix=()) -> dict[tuple[str, ...], dict]:
  """{path of a block: its sown {name: value}} for the blocks that sowed 'gate'."""
  found = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      if 'gate' in value and not isinstance(value['gate'], dict):
        found[prefix + (key,)] = {k: v[0] if isinstance(v, tuple) else v for k, v in value.items()}
      else:
        found.update(_flatten(value, prefix + (key,)))
  return found


def collect(trainer, params, max_windows: int | None = None) -> dict:
  """{block path: {'gate': [H], 'hit_score': [H], 'hit_distance': [H] (normalised keys
  only), 'occupancy_mean': float, 'occupancy_final': float, 'occupancy_by_step': [S],
  'memory_size': N, 'num_steps': S}}: means over the S validation calls (batches of
  lane segments) over the validation documents, all of them or the first ones that
  make up `max_windows` segments. Needs a model with a store on document lanes."""
  if not (trainer.has_memory and trainer.streams):
    raise ValueError('store statistics need a model with an external store trained on '
                     'document lanes (task.stream_documents=true)')
  task = trainer.task

  @jax.jit
  def step(params, memory, tokens, lengths, reset):
    batch = task.batch_from_tokens(tokens, lengths=lengths, reset=reset)
    _, updated = trainer.model.apply({'params': params, 'memory': memory}, batch['inputs'],
                                     reset=batch['reset'], mutable=['memory', 'intermediates'])
    return updated['memory'], updated['intermediates']

  memory, sums, steps = trainer.empty_validation_memory(), {}, 0
  for batch, _ in trainer.validation_lanes(max_windows):
    memory, sown = step(params, memory, *batch)
    for path, values in _flatten(jax.device_get(sown)).items():
      block = sums.setdefault(path, {'gate': 0.0, 'hit_score': 0.0, 'occupancy': []})
      block['gate'] = block['gate'] + np.asarray(values['gate'], np.float64)
      block['hit_score'] = block['hit_score'] + np.asarray(values['hit_score'], np.float64)
      block['occupancy'].append(float(values['occupancy']))
    steps += 1
  if not steps:
    raise ValueError('the validation split has no document to read')
  model = trainer.config.model
  out = {}
  for path, block in sums.items():
    hit = block['hit_score'] / steps
    stats = dict(gate=(block['gate'] / steps).tolist(), hit_score=hit.tolist(),
                 occupancy_mean=float(np.mean(block['occupancy'])),
                 occupancy_final=block['occupancy'][-1],
                 occupancy_by_step=block['occupancy'], memory_size=int(model.memory_size),
                 num_steps=steps)
    if model.get('normalize_keys', False):  # hit_score is a cosine: ‖q̂ − k̂‖ = √(2 − 2cos)
      stats['hit_distance'] = np.sqrt(2.0 - 2.0 * np.clip(hit, -1.0, 1.0)).tolist()
    out['/'.join(path)] = stats
  return out
