"""memflax's NTM on copy against a PyTorch NTM of the most used PyTorch design, same run.

  pip install torch==2.13.0   # only this comparison needs torch; not in requirements.txt
  python benchmarks/torch_ntm_baseline.py --out benchmarks/results/ntm_vs_pytorch_ntm.json

The PyTorch side is written here after the design and copy-task defaults of
loudinthecloud/pytorch-ntm, the PyTorch NTM most people run: an nn.LSTM controller of
100 units with learned initial state, fed the input and the previous read; one read and
one write head, each a linear map of the controller output to key, β, g, a 3-way shift
and γ (the write head also erase and add); a 128 × 20 memory started from a fixed
uniform bias; cosine content addressing, interpolation, circular shift (a conv1d per
batch row, as there), sharpening w^γ / Σ w^γ; output sigmoid(linear([h, read])). Its
copy task: 8 bits wide, one length per batch drawn from 1..20, the model stepped in
Python for L + 1 input steps and L output steps, BCE loss, RMSprop (lr 1e-4, momentum
0.9, alpha 0.95), gradients clamped to ±10. torch keeps its default thread count.

memflax's side is `benchmarks/train_throughput.py` on the default config
(configs/ntm_copy.py), in a fresh process per batch size, as train.py runs. Rounds alternate the two, and the figures
are medians over rounds; the JSON holds every round's rate and the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from memflax import progress_log  # noqa: E402  (no jax: memflax's runs are children)

WIDTH, CONTROLLER, SLOTS, SLOT_WIDTH = 8, 100, 128, 20


def _torch_model():
  import torch
  from torch import nn
  from torch.nn import functional as F

  def head_parameters(raw):
    k, beta, g, s, gamma = torch.split(raw[:, :SLOT_WIDTH + 6], [SLOT_WIDTH, 1, 1, 3, 1], 1)
    return k, F.softplus(beta), torch.sigmoid(g), F.softmax(s, dim=1), 1 + F.softplus(gamma)

  class TorchNTM(nn.Module):
    def __init__(self):
      super().__init__()
      self.lstm = nn.LSTM(WIDTH + 1 + SLOT_WIDTH, CONTROLLER)
      self.h0 = nn.Parameter(torch.randn(1, 1, CONTROLLER) * 0.05)
      self.c0 = nn.Parameter(torch.randn(1, 1, CONTROLLER) * 0.05)
      self.read_head = nn.Linear(CONTROLLER, SLOT_WIDTH + 6)
      self.write_head = nn.Linear(CONTROLLER, 3 * SLOT_WIDTH + 6)
      self.readout = nn.Linear(CONTROLLER + SLOT_WIDTH, WIDTH)
      bound = 1 / math.sqrt(SLOTS + SLOT_WIDTH)
      self.register_buffer('memory_bias', torch.empty(SLOTS, SLOT_WIDTH).uniform_(-bound, bound))
      self.register_buffer('read_bias', torch.randn(1, SLOT_WIDTH) * 0.01)

    def start(self, batch):
      self.memory = self.memory_bias.repeat(batch, 1, 1)
      zeros = torch.zeros(batch, SLOTS)
      self.state = (self.read_bias.repeat(batch, 1),
                    (self.h0.repeat(1, batch, 1), self.c0.repeat(1, batch, 1)), zeros, zeros)

    def address(self, k, beta, g, s, gamma, w_prev):
      similarity = F.cosine_similarity(self.memory + 1e-16, k.unsqueeze(1) + 1e-16, dim=-1)
      w = g * F.softmax(beta * similarity, dim=1) + (1 - g) * w_prev
      w = torch.stack([  # circular convolution, one batch row at a time
          F.conv1d(torch.cat([row[-1:], row, row[:1]]).view(1, 1, -1),
                   shift.view(1, 1, -1)).view(-1) for row, shift in zip(w, s)])
      w = w ** gamma
      return w / (w.sum(1, keepdim=True) + 1e-16)

    def forward(self, x):
      read, controller, read_w, write_w = self.state
      out, controller = self.lstm(torch.cat([x, read], 1).unsqueeze(0), controller)
      h = out.squeeze(0)
      read_w = self.address(*head_parameters(self.read_head(h)), read_w)
      read = torch.matmul(read_w.unsqueeze(1), self.memory).squeeze(1)
      raw = self.write_head(h)
      write_w = self.address(*head_parameters(raw), write_w)
      erase = torch.sigmoid(raw[:, SLOT_WIDTH + 6:2 * SLOT_WIDTH + 6])
      add = torch.tanh(raw[:, 2 * SLOT_WIDTH + 6:])
      self.memory = (self.memory * (1 - write_w.unsqueeze(-1) * erase.unsqueeze(1))
                     + write_w.unsqueeze(-1) * add.unsqueeze(1))
      self.state = (read, controller, read_w, write_w)
      return torch.sigmoid(self.readout(torch.cat([h, read], 1)))

  return TorchNTM


def torch_rate(batch_size: int, batches: int, warmup: int, seed: int) -> float:
  """Sequences per second of the PyTorch NTM's copy training at `batch_size`."""
  import numpy as np
  import torch
  from torch import nn

  torch.manual_seed(seed)
  rng, lengths = np.random.default_rng(seed), random.Random(seed)
  net = _torch_model()()
  criterion = nn.BCELoss()
  optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-4, momentum=0.9, alpha=0.95)

  def train_batch():
    length = lengths.randint(1, 20)
    bits = torch.from_numpy(rng.binomial(1, 0.5, (length, batch_size, WIDTH))).float()
    inputs = torch.zeros(length + 1, batch_size, WIDTH + 1)
    inputs[:length, :, :WIDTH] = bits
    inputs[length, :, WIDTH] = 1.0
    optimizer.zero_grad()
    net.start(batch_size)
    for t in range(length + 1):
      net(inputs[t])
    blank = torch.zeros(batch_size, WIDTH + 1)
    outputs = torch.stack([net(blank) for _ in range(length)])
    criterion(outputs, bits).backward()
    for p in net.parameters():
      p.grad.data.clamp_(-10, 10)
    optimizer.step()

  for _ in range(warmup):
    train_batch()
  start = time.perf_counter()
  for _ in range(batches):
    train_batch()
  return batch_size * batches / (time.perf_counter() - start)


def memflax_rate(batch_size: int, steps: int) -> float:
  """One process per batch size, as `python train.py` would be (a batch-1 run keeps one
  device and one core: memflax/cpu_cores.py)."""
  with tempfile.NamedTemporaryFile(suffix='.json') as out:
    subprocess.run([sys.executable, 'benchmarks/train_throughput.py',
                    f'--batch_sizes={batch_size}', f'--steps={steps}', '--repeats=3',
                    f'--out={out.name}'], cwd=REPO, check=True, capture_output=True)
    return json.loads(Path(out.name).read_text())[0]['sequences_per_sec']


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch_sizes', default='1,32')
  parser.add_argument('--torch_sequences', type=int, default=320,
                      help='sequences the PyTorch NTM trains on per batch size and round')
  parser.add_argument('--steps', type=int, default=100, help="memflax's timed steps")
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  try:
    import torch
  except ImportError:
    sys.exit('error: this comparison needs torch: pip install torch==2.13.0')
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  rates = {name: {b: [] for b in batch_sizes} for name in ('memflax', 'pytorch')}
  for round_ in progress_log.bar(range(args.rounds), args.rounds, 'rounds'):
    for b in batch_sizes:
      batches = max(args.torch_sequences // b, 4)
      rates['pytorch'][b].append(torch_rate(b, batches, warmup=2, seed=round_))
      print(f'round {round_}: PyTorch NTM batch {b}: {rates["pytorch"][b][-1]:.1f} '
            'sequences/s', flush=True)
    for b in batch_sizes:
      rates['memflax'][b].append(memflax_rate(b, args.steps))
      print(f'round {round_}: memflax NTM batch {b}: {rates["memflax"][b][-1]:.1f} '
            'sequences/s', flush=True)
  rows = []
  for b in batch_sizes:
    ours, theirs = (statistics.median(rates[n][b]) for n in ('memflax', 'pytorch'))
    rows.append(dict(batch_size=b, memflax_sequences_per_sec=ours,
                     pytorch_sequences_per_sec=theirs, ratio=ours / theirs,
                     memflax_all=rates['memflax'][b], pytorch_all=rates['pytorch'][b],
                     rounds=args.rounds, torch_version=torch.__version__,
                     torch_threads=torch.get_num_threads(),
                     device=f'{platform.processor() or platform.machine()} CPU'))
    print(f'batch {b}: memflax {ours:.0f} against PyTorch {theirs:.1f} sequences/s '
          f'({ours / theirs:.1f}x)', flush=True)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
  main()
