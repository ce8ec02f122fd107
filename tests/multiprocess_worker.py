"""One process of a two-process CPU run (jax.distributed on 127.0.0.1, gloo collectives).

usage: python multiprocess_worker.py PORT PROCESS_ID WORKDIR [--config.FIELD=VALUE ...]
Trains the tiny NTM copy config and saves this process's copy of the final
parameters to WORKDIR/params_process<ID>.npz for the test to compare.
"""

import sys
from pathlib import Path

import numpy as np


def main():
  port, process_id, workdir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
  from memflax import parallel
  parallel.initialize_distributed(f'127.0.0.1:{port}', num_processes=2, process_id=process_id)

  import jax
  from configs.ntm_copy import get_config
  from memflax.train import train_and_evaluate

  config = get_config('tiny')
  config.update(num_train_steps=6, log_every_steps=2, eval_every_steps=6,
                checkpoint_every_steps=3)
  state = train_and_evaluate(config, workdir)
  leaves, _ = jax.tree.flatten(state.params)
  local = {f'leaf{i}': np.asarray(leaf.addressable_shards[0].data) for i, leaf in enumerate(leaves)}
  np.savez(workdir / f'params_process{process_id}.npz', devices=jax.device_count(),
           processes=jax.process_count(), **local)


if __name__ == '__main__':
  main()
