"""A model and a task of the user's, outside memflax, named by dotted module paths: the
README's guide files, run as the README says, from the user's directory."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, cli_env
from test_readme_commands import file_blocks


def run(script, *args, cwd):
  return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=cli_env(),
                        capture_output=True, text=True, timeout=600)


def save_guide_files(directory):
  files = file_blocks()
  assert {'my_models/tiny_rnn.py', 'my_tasks/echo.py', 'my_config.py'} <= set(files)
  for path, text in files.items():
    (directory / path).parent.mkdir(parents=True, exist_ok=True)
    (directory / path).write_text(text)


def test_guide_model_and_task_train_evaluate_and_learn(tmp_path):
  save_guide_files(tmp_path)
  trained = run('train.py', '--config=my_config.py', '--workdir=runs/echo', cwd=tmp_path)
  assert trained.returncode == 0, trained.stderr[-2000:]
  assert trained.stdout.splitlines()[-1].startswith('done: my_models.tiny_rnn on my_tasks.echo')
  rows = [json.loads(l) for l in (tmp_path / 'runs/echo/metrics.jsonl').read_text().splitlines()]
  final = [r['eval_bit_errors_per_seq'] for r in rows if 'eval_bit_errors_per_seq' in r][-1]
  assert final < 0.1  # chance is 5 of the 10 scored bits
  evaluated = run('eval.py', '--workdir=runs/echo', '--lengths=12,24', cwd=tmp_path)
  assert evaluated.returncode == 0, evaluated.stderr[-2000:]
  result = json.loads((tmp_path / 'runs/echo/eval.json').read_text())['my_tasks.echo']
  assert set(result) == {'12', '24'} and result['24']['bit_errors_per_seq'] < 0.5


def test_missing_module_or_class_is_one_error_line(tmp_path):
  save_guide_files(tmp_path)
  (tmp_path / 'my_models' / 'empty.py').write_text('"""No Model here."""\n')
  for name, expected in (('my_models.nothing', "no module 'my_models.nothing'"),
                         ('my_models.empty', 'defines no Model')):
    proc = run('train.py', '--config=my_config.py', f'--config.model.name={name}',
               '--workdir=runs/bad', cwd=tmp_path)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / 'runs/bad').exists()
