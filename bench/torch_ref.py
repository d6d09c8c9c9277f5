"""PyTorch on one thread, the reference for `npm run bench`: training samples/s of the same
MLP (784-256-128-10) or CNN (conv 16, pool, conv 32, pool, dense 128, 10) as chainrule's, with
plain SGD at batch 64, on the same digits (a float32 file of samples and an int32 file of
labels written by the bench), plus its float32 matmul GFLOP/s on 1024^3.

Usage: python3 bench/torch_ref.py X.f32 Y.i32 SAMPLES SECONDS  -> one JSON line
       python3 bench/torch_ref.py X.f32 Y.i32 SAMPLES SECONDS THREADS MODEL BATCH
         (MODEL mlp, cnn or wide: 784-1024x5-10; for the scaling table: one model on THREADS
          threads, with OMP_WAIT_POLICY=passive set by the caller)
"""
import json
import sys
import time

import numpy as np
import torch

x_path, y_path, samples, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(threads)
torch.manual_seed(42)
x = torch.from_numpy(np.fromfile(x_path, dtype=np.float32).reshape(samples, 784))
y = torch.from_numpy(np.fromfile(y_path, dtype=np.int32).astype(np.int64))


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def wide():
    layers, width = [], 784
    for _ in range(5):
        layers += [torch.nn.Linear(width, 1024), torch.nn.ReLU()]
        width = 1024
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))


def cnn():
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 28, 28)),
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train(model, batch=64, lr=0.05):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = samples // batch

    def step(i):
        b = i % steps
        xb, yb = x[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for i in range(5):
        step(i)
    # The best of three windows, as chainrule's figures are measured.
    n, best = 0, 0.0
    for _ in range(3):
        done, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds / 3:
            loss = step(n)
            n += 1
            done += 1
        best = max(best, done * batch / (time.perf_counter() - t))
    return {'samplesPerSecond': best, 'lastLoss': float(loss)}


def matmul_gflops():
    a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
    a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < min(seconds, 2):
        a @ b
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t) / 1e9


if len(sys.argv) > 6:
    name, batch = sys.argv[6], int(sys.argv[7])
    model = {'mlp': mlp, 'cnn': cnn, 'wide': wide}[name]()
    print(json.dumps({'torch': torch.__version__, 'threads': threads, 'model': name, 'batch': batch, **train(model, batch, 0.01 if name == 'wide' else 0.05)}))
    sys.exit(0)

print(json.dumps({
    'torch': torch.__version__, 'blas': torch.__config__.show().split('BLAS_INFO=')[-1].split(',')[0],
    'mlp': train(mlp()), 'cnn': train(cnn()), 'matmulGflops': matmul_gflops(),
}))
