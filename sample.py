"""Generate text from a trained byte-level language model:

  python sample.py --workdir=DIR --prompt="def " --length=400 --temperature=0.8 --top_k=40

Restores DIR's newest good checkpoint and prints the prompt and its continuation.
The model steps once per new byte (an LSTM carry or a Transformer KV cache, inside
one compiled scan); the same --seed gives the same text. A Transformer writes in
windows of its training length (memflax.generate.generate_in_windows).
"""

import sys

from absl import app, flags, logging

flags.DEFINE_string('workdir', None, 'Workdir of a byte-level language-model run.')
flags.DEFINE_string('prompt', '\n', 'Text to continue (UTF-8).')
flags.DEFINE_integer('length', 400, 'Bytes to generate.')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature; 0 picks the most likely byte.')
flags.DEFINE_integer('top_k', 40, 'Sample among the k most likely bytes (0: all).')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
FLAGS = flags.FLAGS


def main(argv):
  from memflax import cli_errors
  if len(argv) > 1:
    cli_errors.fail(f'unexpected arguments {argv[1:]}')
  if not FLAGS.workdir:
    cli_errors.fail('--workdir is required: the workdir of a language-model run')
  prompt = FLAGS.prompt.encode('utf-8')
  if not prompt:
    cli_errors.fail('--prompt is empty; give at least one character to continue')
  if FLAGS.length < 1:
    cli_errors.fail(f'--length must be a positive integer, got {FLAGS.length}')
  if FLAGS.temperature < 0 or FLAGS.top_k < 0:
    cli_errors.fail('--temperature and --top_k must be >= 0')
  logging.set_verbosity(logging.WARNING)
  import jax
  import numpy as np
  from memflax import evaluate, generate
  from memflax import compilation_cache
  compilation_cache.enable()

  with cli_errors.exit_on_user_error():
    trainer, params, step = evaluate.restore(FLAGS.workdir)
  if not trainer.host_fed or not hasattr(trainer.model, 'decode_step'):
    cli_errors.fail(f'{FLAGS.workdir} holds a {trainer.config.model.name} on '
                    f'{trainer.config.task.name}, not a byte-level language model that can '
                    'generate (configs/*_lm.py)')
  if trainer.has_memory:
    cli_errors.fail(f'{FLAGS.workdir} holds a {trainer.config.model.name}, whose store is written '
                    'a segment at a time; sample.py cannot generate from it yet (score it with '
                    'eval.py)')
  sampling = dict(temperature=FLAGS.temperature, top_k=FLAGS.top_k)
  prompt_tokens = np.frombuffer(prompt, np.uint8)[None]
  key = jax.random.PRNGKey(FLAGS.seed)
  if hasattr(trainer.model, 'max_len'):  # absolute positions: stay within the trained window
    tokens = generate.generate_in_windows(trainer.model, params, prompt_tokens, FLAGS.length,
                                          key, context=trainer.task.seq_length, **sampling)
  else:  # a recurrent state carries on as far as asked
    tokens = generate.generate(trainer.model, params, prompt_tokens, FLAGS.length, key,
                               **sampling)
  text = bytes(np.asarray(tokens[0], np.uint8)).decode('utf-8', errors='replace')
  sys.stdout.write(text + '\n')
  print(f'[{trainer.config.model.name}, step {step}, {FLAGS.length} bytes, temperature '
        f'{FLAGS.temperature}, top_k {FLAGS.top_k}, seed {FLAGS.seed}]', file=sys.stderr)


if __name__ == '__main__':
  from memflax.cli_errors import parse_flags
  app.run(main, flags_parser=parse_flags)
