"""Facts written to a kNN store in one process, queried in another (tests/test_knn_lm.py).

  python tests/store_restart_worker.py present WORKDIR   # write the facts, save, answer too
  python tests/store_restart_worker.py query WORKDIR     # restore the store, answer, compare

`present` feeds a segment of key=value facts to a fresh knn_transformer (the tiny LM
config) with its store carried, saves the train state with the store through memflax's
orbax Checkpointer, then feeds a segment of queries (the keys again) and writes the
logits it gets: the answer without a restart. `query` is a new process that restores that
checkpoint and feeds the same queries. Both write WORKDIR/<mode>.npz.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from memflax.checkpoint import Checkpointer
from memflax.config_presets import compose
from memflax.train import Trainer

FACTS = b''.join(b'k%02d=v%03d;' % (i, (37 * i) % 1000) for i in range(10))  # 90 bytes: one segment
QUERIES = b''.join(b'k%02d=' % i for i in range(10))


def _segment(text: bytes, batch: int, length: int) -> jax.Array:
  row = np.frombuffer(text.ljust(length + 1, b' ')[:length + 1], np.uint8)
  return jnp.asarray(np.tile(row, (batch, 1)))


def main(mode: str, workdir: str) -> None:
  config = compose('knn_transformer', 'byte_lm', 'tiny')
  config.task.seq_length = 96  # the facts fit one segment
  config.model.memory_size, config.model.top_k = 128, 8
  trainer = Trainer(config, data=object())  # no corpus: these segments are given here
  abstract = trainer.abstract_state()
  batch = config.batch_size

  def answer(state):
    tokens = _segment(QUERIES, batch, config.task.seq_length)
    inputs = trainer.task.batch_from_tokens(tokens)['inputs']
    logits, _, _ = trainer.apply_model(state.params, state.memory, inputs,
                                       jnp.zeros(batch, bool))
    return np.asarray(logits)

  Path(workdir).mkdir(parents=True, exist_ok=True)
  checkpointer = Checkpointer(workdir)
  try:
    if mode == 'present':
      state = trainer.init_state()
      inputs = trainer.task.batch_from_tokens(_segment(FACTS, batch, config.task.seq_length))
      _, _, memory = trainer.apply_model(state.params, state.memory, inputs['inputs'],
                                         jnp.ones(batch, bool))
      state = state.replace(memory=memory)
      checkpointer.save(1, state, {'note': 'facts'})
      checkpointer.wait()
      empty = state.replace(memory=trainer.empty_memory(batch))
      np.savez(f'{workdir}/present.npz', logits=answer(state), empty=answer(empty),
               count=np.asarray(memory_count(state)))
      print(f'wrote {len(FACTS)} bytes of facts into the store and saved it in {workdir}; '
            'query them from a new process with: query')
    else:
      state, _, _ = checkpointer.restore_newest(abstract)
      logits = answer(state)
      np.savez(f'{workdir}/query.npz', logits=logits, count=np.asarray(memory_count(state)))
      before = np.load(f'{workdir}/present.npz')
      same = bool(np.array_equal(logits, before['logits']))
      print(f'restored a store of {int(np.asarray(memory_count(state))[0])} entries per row; '
            f'answers to the queries equal those before the restart bit for bit: {same} '
            f'(with an empty store they differ by up to '
            f'{float(np.abs(logits - before["empty"]).max()):.3g})')
      if not same:
        sys.exit(1)
  finally:
    checkpointer.close()


def memory_count(state):
  return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state.memory)
          if 'count' in jax.tree_util.keystr(path)][0]


if __name__ == '__main__':
  main(*sys.argv[1:])
