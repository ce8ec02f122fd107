"""Train a memflax model: python train.py --config=configs/ntm_copy.py --workdir=DIR

Rerunning the same command in the same workdir resumes from its newest good
checkpoint; SIGTERM (preemption) saves a checkpoint and exits 0. Override any
field with --config.FIELD=VALUE (unknown fields are errors). `python train.py --list` names the models, tasks and configs. Several
hosts: pass --coordinator_address/--num_processes/--process_id to every process
(CPU collectives use gloo).
"""

import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Path to a config file in configs/, '
                                'optionally with a variant: configs/X.py:tiny.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.DEFINE_bool('list', False, 'Print the available models, tasks and configs, then exit.')
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0 for a multi-process run (jax.distributed).')
flags.DEFINE_integer('num_processes', 1, 'Processes in a multi-process run.')
flags.DEFINE_integer('process_id', 0, 'This process\'s index in a multi-process run.')
FLAGS = flags.FLAGS


def main(argv):
  from memflax import cli_errors
  if len(argv) > 1:
    cli_errors.fail(f'unexpected arguments {argv[1:]}')
  if FLAGS.list:
    from memflax import catalogue
    print(catalogue.describe())
    return
  for name in ('config', 'workdir'):
    if FLAGS[name].value is None:
      cli_errors.fail(f'--{name} is required (or --list to see what there is)')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = cli_errors.loaded_config()
  from memflax import parallel
  if FLAGS.coordinator_address:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
  else:
    from memflax import cpu_cores
    # One CPU device per core, or one device and one core for a batch that one device
    # takes (batch 1): memflax/cpu_cores.py.
    rows = None if 'continual' in config else cpu_cores.run_rows(config)
    cpu_cores.use_every_core(*([rows] if rows else []))
  from memflax import compilation_cache
  compilation_cache.enable()
  from memflax.train import train_and_evaluate
  from memflax.checkpoint import CheckpointWriteError
  from memflax import preemption
  # SIGTERM from here on means "save and stop" (preemption), even before the loop starts.
  with cli_errors.exit_on_user_error(), preemption.handling():
    try:
      if 'continual' in config:  # a task sequence (configs/cl_*.py): memflax.continual
        from memflax.continual.runner import train_sequence
        train_sequence(config, FLAGS.workdir)
      else:
        train_and_evaluate(config, FLAGS.workdir)
    except preemption.Preempted as e:  # a clean stop, not a failure: the scheduler may requeue the job
      print(f'memflax: {e}', flush=True)
    except CheckpointWriteError as e:
      # The aborted orbax write leaves coroutines behind that interpreter teardown would
      # report one by one; everything memflax writes is closed by now, so skip teardown.
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.stdout.flush()
      os._exit(4)
    except OSError as e:
      if e.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS):
        raise
      cli_errors.fail(f'cannot write {e.filename or "to the workdir"}: {e.strerror}; the '
                      'checkpoints already saved are intact: free space and rerun to resume',
                      code=4)


if __name__ == '__main__':
  from memflax import huge_pages
  huge_pages.restart_with_huge_pages()  # before jax is imported (memflax/huge_pages.py)
  from memflax.cli_errors import parse_flags
  app.run(main, flags_parser=parse_flags)
