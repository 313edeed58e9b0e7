"""`python -m lossbench.bench`: lossbench's training loop against the usual loop and a bare loop.

Four loops train the same model, batch size, optimiser (Adam) and number of steps, alternating, in one
process; each is timed from its first step to its last (setup -- data loading, model building, writer
creation -- is not timed, for any of them):

(a) reference: the usual style (PyTorch's MNIST example): torchvision.datasets.MNIST through
    transforms.ToTensor() + Normalize, DataLoader(shuffle=True), cross-entropy, torch.optim.Adam.
(b) bare: tensors already in memory, a random permutation, index batching, forward/backward/step and
    nothing else (the optimiser built as lossbench builds it, so that (b) vs (c) is the instrumentation).
(c) lossbench: train.run with data=mnist loss=ce optim=adam as a user runs it -- numerics monitors,
    histograms, TensorBoard logging and periodic evaluation on the validation split (10k) all on. Timed
    by the loop itself: summary["loop_time_s"] covers every step, monitor, log write and evaluation (the
    final one included); setup and the final checkpoint are not in it.
(d) lossbench with numerics=off (monitors and histograms off; logging and evaluation still on).

Rounds: an untimed warm-up round, then --repeats rounds of (a), (b), (c), (d) back to back. It prints each
loop's median samples/s, the ratios of those medians, each round's ratios, and last
`speedup_vs_dataloader=<c/a> overhead_vs_bare=<1 - c/b>` as the medians of the per-round ratios (the loops of
one round see the same machine conditions; a shared machine drifts between rounds).

Without MNIST (no --data-root / LOSSBENCH_DATA_DIR holding it) every loop uses a synthetic set of
MNIST's shape: (a) then reads uint8 images as PIL images through the same transforms, so the reference
still does its per-sample work.

--clock cpu divides by this process's CPU time instead of wall time: steadier on a machine that other
work shares, meaningful with --threads 1 and --workers 0 (worker processes are not counted).

`--sweep-check` instead times a 2-job sweep with the joblib launcher (n_jobs=2) against the same two
jobs run one after another by the basic launcher.

`--sweep` times whole commands, each a fresh process, side by side: (hand) the saturation study's 30 runs
(regimes scale50 and bias_neg100 x losses bce, bce_logits, bce_manual, bce_clipped, nll x seeds 0-2) as one plain
PyTorch script a user would write (HAND_SCRIPT below: data, an MLP 20-64-64-1, SGD lr 0.01 momentum 0.9, batch
128, 300 steps, validation AUC every 25 steps on 5,000 points), (basic) `python -m lossbench -m
experiment=saturation +regime=scale50,bias_neg100` and (stacked) the same with `hydra/launcher=stacked`. It
prints each command's wall time and CPU time (user + system of its processes), their ratios to the hand script
(of the medians over the rounds, and the median of each round's own ratio: a round runs the three commands back
to back, so its ratio is free of the machine's drift between rounds), and each sweep's fixed cost per job (its
wall time less the training and evaluation loops its jobs report, divided by the jobs). --threads N: N torch
threads for all three (the hand script's set_num_threads, the sweeps' trainer.threads); default: torch's and
lossbench's own choice (all cores).

`--stacked` times the same K jobs trained one after another in one process (what the basic launcher does,
Hydra's per-job composition aside: both launchers compose every job alike) and trained as stacks
(hydra/launcher=stacked), each timing in a fresh process after an untimed warm-up, alternating, for: the
saturation study's runs (experiment=saturation: synthetic, MLP 20-64-64-1, 300 steps, evaluation and logging
every 25 steps, monitors every 5; losses bce/bce_logits/bce_manual and seeds varied) at K = 8 and 32, and the
MNIST MLP 784-256-256-10 (CE, Adam, 300 steps) at K = 8. Each timing covers the whole of train.run_jobs: data,
model and writer setup, training, evaluation, logging and the files written. It ends with
`stacked_speedup_K8=<x> stacked_speedup_K32=<y>` and `stacked_speedup_mnist_K8=<z>` (medians of the per-round
ratios) and each case's peak resident memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lossbench.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp", choices=["mlp", "linear", "cnn"])
    p.add_argument("--batch-size", type=positive, default=128)
    p.add_argument("--steps", type=positive, default=1000, help="timed steps per loop and repeat")
    p.add_argument("--repeats", type=positive, default=5, help="timed rounds of the four loops (medians reported)")
    p.add_argument("--warmup-steps", type=non_negative, default=50, help="steps of the untimed warm-up round")
    p.add_argument("--eval-every", type=positive, default=500,
                   help="(c), (d): steps between evaluations (default 500, as experiment=mnist_mlp)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (all loops)")
    p.add_argument("--workers", type=non_negative, default=0, help="DataLoader workers for (a) (the example's CPU default: 0)")
    p.add_argument("--threads", type=positive, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="what the final line's ratios use")
    p.add_argument("--n-train", type=positive, default=60000, help="training samples (MNIST: a random subset)")
    p.add_argument("--n-val", type=positive, default=10000, help="validation samples (MNIST: a random subset)")
    p.add_argument("--data-root", default=os.environ.get("LOSSBENCH_DATA_DIR"),
                   help="torchvision MNIST root (default $LOSSBENCH_DATA_DIR); synthetic data if absent")
    p.add_argument("--sweep-check", action="store_true",
                   help="time a 2-job joblib sweep against the same jobs run one after another")
    p.add_argument("--sweep-steps", type=positive, default=1500, help="steps of each sweep-check job")
    p.add_argument("--stacked", action="store_true", help="time K jobs one after another against stacks of them")
    p.add_argument("--sweep", action="store_true",
                   help="time the saturation grid: a hand-written PyTorch script, the basic and the stacked launcher")
    p.add_argument("--watch", action="store_true",
                   help="time the bare step with a plain criterion against the same with lossbench.watch's")
    p.add_argument("--watch-detail-every", type=positive, default=10,
                   help="--watch: lossbench.watch's detail_every (its default 10; 1 samples every call)")
    p.add_argument("--stacked-worker", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args(None)  # --help answered before torch, Hydra and lossbench's training code are imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from lossbench import data, models  # noqa: E402
from lossbench.config import CONFIGS  # noqa: E402
from lossbench.engine import train  # noqa: E402
from lossbench.engine.member import make_optimizer  # noqa: E402
from lossbench.errors import LossbenchError  # noqa: E402
from lossbench.store import read_json  # noqa: E402


def has_mnist(root: str | None) -> bool:
    return bool(root) and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def data_overrides(args: argparse.Namespace) -> list[str]:
    if has_mnist(args.data_root):
        return ["data=mnist", f"data.root={args.data_root}", "data.download=false",
                f"data.n_train={args.n_train}", f"data.n_val={args.n_val}"]
    # same shape as MNIST's (flattened) and the same split sizes
    return ["data=synthetic", "data.n_classes=10", "data.n_features=784", f"data.n_train={args.n_train}",
            f"data.n_val={args.n_val}"]


def compose_cfg(args: argparse.Namespace, *extra: str) -> DictConfig:
    overrides = [
        "loss=ce", "optim=adam", f"model={args.model}", f"trainer.batch_size={args.batch_size}",
        f"trainer.device={args.device}", f"trainer.precision={args.precision}",
        f"trainer.compile={str(args.compile).lower()}", f"trainer.threads={args.threads or 'null'}",
        f"trainer.eval_every={args.eval_every}", "trainer.target_metric=val/accuracy", "trainer.target_value=0.97",
        *data_overrides(args),
    ]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=[*overrides, *extra])


# --- (a)'s data: per-sample PIL images through ToTensor + Normalize ---------------------------------------
class UInt8Images(torch.utils.data.Dataset):
    """uint8 images served one at a time as PIL images, exactly as torchvision.datasets.MNIST serves them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i].numpy(), mode="L")), int(self.y[i])


def reference_dataset(args: argparse.Namespace, synthetic_u8: tuple[torch.Tensor, torch.Tensor] | None):
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    if synthetic_u8 is not None:
        return UInt8Images(*synthetic_u8, transform)
    ds = datasets.MNIST(args.data_root, train=True, download=False, transform=transform)
    return ds if args.n_train >= len(ds) else torch.utils.data.Subset(ds, range(args.n_train))


# --- the loops: each returns (samples per wall second, samples per CPU second) over its timed steps --------
class Clocks:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, samples: int, device: torch.device) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return samples / (time.perf_counter() - self.wall), samples / (time.process_time() - self.cpu)


def _amp(args: argparse.Namespace, device: torch.device):
    if args.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=train.AMP_DTYPES[args.precision])


def _model(cfg: DictConfig, device: torch.device, compiled: bool):
    torch.manual_seed(0)
    model = models.build(cfg.model, (1, 28, 28), 10).to(device)
    return model, (torch.compile(model) if compiled else model)


def reference_loop(args, cfg, device, dataset, steps: int) -> tuple[float, float]:
    model, fwd = _model(cfg, device, args.compile)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    model.train()
    clocks, done = Clocks(), 0
    while done < steps:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            with _amp(args, device):
                loss = F.cross_entropy(fwd(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done += 1
            if done == steps:
                break
    return clocks.rates(steps * args.batch_size, device)


def bare_loop(args, cfg, device, x: torch.Tensor, y: torch.Tensor, steps: int,
              loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> tuple[float, float]:
    model, fwd = _model(cfg, device, args.compile)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    bs, n = args.batch_size, len(y)
    per_epoch = n // bs
    clocks = Clocks()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(n, device=device)
        idx = perm[(step % per_epoch) * bs : (step % per_epoch + 1) * bs]
        with _amp(args, device):
            loss = loss_fn(fwd(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return clocks.rates(steps * bs, device)


def lossbench_loop(cfg: DictConfig, steps: int, eval_shares: list[float] | None = None) -> tuple[float, float]:
    """train.run as a user runs it (logger on, writing to a temporary run directory)."""
    cfg = cfg.copy()
    OmegaConf.update(cfg, "trainer.max_steps", steps)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train.run(cfg, Path(tmp) / "run")
    if summary["status"] != "completed":
        raise RuntimeError(f"lossbench run ended {summary['status']}: {summary.get('error')}")
    if eval_shares is not None:
        eval_shares.append(summary["eval_time_s"] / summary["loop_time_s"])
    samples = summary["steps"] * summary["config"]["trainer"]["batch_size"]
    return samples / summary["loop_time_s"], samples / summary["loop_cpu_s"]


# --- the benchmark --------------------------------------------------------------------------------------
def training_tensors(args: argparse.Namespace, cfg: DictConfig, device: torch.device):
    """(x, y) on the device, the uint8 images of the synthetic set (None for MNIST) and where the data came from."""
    if has_mnist(args.data_root):
        ds = data.load(cfg.data)
        x, y, u8 = ds.x_train, ds.y_train, None
        source = f"MNIST from {args.data_root}"
    else:
        gen = torch.Generator().manual_seed(0)
        u8 = (torch.randint(0, 256, (args.n_train, 28, 28), dtype=torch.uint8, generator=gen),
              torch.randint(0, 10, (args.n_train,), generator=gen))
        x = data.mnist_pixels(u8[0], 1.0)
        y = u8[1]
        source = "synthetic data of MNIST's shape (no MNIST under --data-root / LOSSBENCH_DATA_DIR)"
    return x.to(device), y.to(device), u8, source


def benchmark(args: argparse.Namespace) -> dict[str, float]:
    device = train.pick_device(args.device)
    threads = args.threads or os.cpu_count() or 1
    cfg = compose_cfg(args)
    cfg_off = compose_cfg(args, "numerics=off")
    x, y, u8, source = training_tensors(args, cfg, device)
    ref_ds = reference_dataset(args, u8)

    eval_shares: list[float] = []
    loops: dict[str, Callable[[int], tuple[float, float]]] = {
        "a_dataloader": lambda n: reference_loop(args, cfg, device, ref_ds, n),
        "b_bare": lambda n: bare_loop(args, cfg, device, x, y, n),
        "c_lossbench": lambda n: lossbench_loop(cfg, n, eval_shares),
        "d_lossbench_numerics_off": lambda n: lossbench_loop(cfg_off, n),
    }
    print(f"lossbench.bench: model={args.model} batch_size={args.batch_size} steps={args.steps} "
          f"repeats={args.repeats} device={device} precision={args.precision} compile={args.compile} "
          f"threads={threads} workers={args.workers} clock={args.clock} n_train={len(y)} n_val={args.n_val}; "
          f"data: {source}", flush=True)
    print(f"(c) config: numerics.every={cfg.numerics.every} hist_every={cfg.numerics.hist_every} "
          f"log_every={cfg.trainer.log_every} eval_every={cfg.trainer.eval_every} (+ final eval) "
          f"logger={cfg.logger.enabled}", flush=True)
    wall: dict[str, list[float]] = {k: [] for k in loops}
    cpu: dict[str, list[float]] = {k: [] for k in loops}
    for rnd in range(args.repeats + 1):  # round 0: warm-up, not recorded
        n = min(args.warmup_steps, args.steps) if rnd == 0 else args.steps
        for name, fn in loops.items():
            torch.set_num_threads(threads)  # train.run sets its own; (a) and (b) get the same count
            w, c = fn(n)
            if rnd:
                wall[name].append(w)
                cpu[name].append(c)
                print(f"  round {rnd}: {name:26s} {w:9.0f} samples/s wall {c:9.0f} samples/s cpu", flush=True)
    med = {clock: {k: statistics.median(v) for k, v in d.items()} for clock, d in (("wall", wall), ("cpu", cpu))}
    print("median samples/s:            wall       cpu")
    for k in loops:
        print(f"  {k:26s} {med['wall'][k]:9.0f} {med['cpu'][k]:9.0f}")
    for clock in ("wall", "cpu"):
        a, b, c, d = (med[clock][k] for k in loops)
        print(f"ratios of the medians, {clock:4s}: c/a = {c / a:.2f}x   c/b = {c / b:.3f}   d/b = {d / b:.3f}   "
              f"monitors' own cost 1 - c/d = {1 - c / d:+.3f}")
    print(f"evaluation's share of (c)'s loop wall time (median): {statistics.median(eval_shares[1:]):.3f}")
    # The four loops of a round run back to back, so a round's ratios compare them under the same machine
    # conditions. A shared machine drifts between rounds by more than the overhead measured here (rounds of
    # the bare loop alone differ by 10-30% on the 2-core CI machine): the last line reports the median of the
    # per-round ratios, which such drift does not move, rather than the ratio of the medians above.
    r = wall if args.clock == "wall" else cpu
    speedups = [c / a for a, c in zip(r["a_dataloader"], r["c_lossbench"], strict=True)]
    overheads = [1 - c / b for b, c in zip(r["b_bare"], r["c_lossbench"], strict=True)]
    print(f"per round ({args.clock}): c/a = " + " ".join(f"{x:.2f}" for x in speedups)
          + "   1 - c/b = " + " ".join(f"{x:+.3f}" for x in overheads))
    speedup, overhead = statistics.median(speedups), statistics.median(overheads)
    print(f"speedup_vs_dataloader={speedup:.3f} overhead_vs_bare={overhead:.3f}", flush=True)
    return {"speedup_vs_dataloader": speedup, "overhead_vs_bare": overhead, **med[args.clock]}


def sweep_check(args: argparse.Namespace) -> None:
    """Two jobs (seed=0,1), basic launcher (one after another) vs joblib launcher with n_jobs=2."""
    common = ["loss=ce", "optim=adam", f"trainer.max_steps={args.sweep_steps}", "seed=0,1",
              f"trainer.batch_size={args.batch_size}", f"model={args.model}", f"trainer.device={args.device}",
              f"trainer.eval_every={args.eval_every}", *data_overrides(args)]
    variants = {
        "basic launcher (one after another)": [],
        "joblib n_jobs=2 (threads = cores / 2)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        f"joblib n_jobs=2, trainer.threads={os.cpu_count()}": [
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"trainer.threads={os.cpu_count()}"],
    }
    print(f"lossbench.bench --sweep-check: 2 jobs x {args.sweep_steps} steps, {os.cpu_count()} cores, "
          f"{data_overrides(args)[0]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(variants.items()):
            sweep_dir = Path(tmp) / str(i)
            cmd = [sys.executable, "-m", "lossbench", "-m", *common, *extra, f"hydra.sweep.dir={sweep_dir}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            jobs = [read_json(p) or {} for p in sorted(sweep_dir.glob("*/summary.json"))]
            if proc.returncode or len(jobs) != 2 or any(j.get("status") != "completed" for j in jobs):
                raise RuntimeError(f"sweep failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
            per_job = ", ".join(f"{j['loop_time_s']:.1f}s ({j['threads']} thr)" for j in jobs)
            print(f"  {name:40s} sweep wall {wall:6.1f}s   per-job loop time {per_job}", flush=True)


# --- a sweep against the script a user would write by hand ------------------------------------------------------
# What a user writes for the saturation grid without lossbench: plain PyTorch, one process, equal work (the data
# of configs/data/synthetic.yaml with each regime, the MLP of configs/model/mlp.yaml at experiment=saturation's
# size, the loss as configs/loss/ defines it, SGD, 300 steps of shuffled batches of 128, validation AUC every 25
# steps and at the end, on the 5,000 validation points). It writes nothing; lossbench's jobs write their
# directories, events and summaries on top.
HAND_SCRIPT = r"""
import sys, time
t0 = time.perf_counter()
import torch
import torch.nn as nn
import torch.nn.functional as F

if len(sys.argv) > 1:  # --threads N: as lossbench's trainer.threads=N
    torch.set_num_threads(int(sys.argv[1]))

def auc(scores, y):  # Mann-Whitney U with tied ranks averaged, as sklearn.metrics.roc_auc_score
    s, order = scores.double().sort()
    ranks = torch.empty_like(s)
    _, inverse, counts = torch.unique_consecutive(s, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks[order] = (ends - (counts.double() - 1) / 2)[inverse]
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

def data(seed, scale, n_train=10000, n_val=5000, d=20, separation=2.0):
    means = torch.randn(2, d, generator=torch.Generator().manual_seed(0))
    means = means / means.norm(dim=1, keepdim=True) * (separation / 2**0.5)
    gen = torch.Generator().manual_seed(seed)
    def draw(n):
        y = torch.cat([torch.zeros(n - n // 2, dtype=torch.long), torch.ones(n // 2, dtype=torch.long)])
        y = y[torch.randperm(n, generator=gen)]
        return ((means[y] + torch.randn(n, d, generator=gen)) * scale).float(), y
    return draw(n_train) + draw(n_val)

def loss_fn(name, z, y):
    if name == "nll":
        return F.nll_loss(F.log_softmax(z, 1), y)
    t = y.float()
    z = z.squeeze(1)
    if name == "bce_logits":
        return F.binary_cross_entropy_with_logits(z, t)
    p = torch.sigmoid(z)
    if name == "bce":
        return F.binary_cross_entropy(p, t)
    if name == "bce_clipped":
        p = p.clamp(1e-7, 1 - 1e-7)
        return F.binary_cross_entropy(p, t)
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()  # bce_manual

results = []
for regime in ("scale50", "bias_neg100"):
    for name in ("bce", "bce_logits", "bce_manual", "bce_clipped", "nll"):
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            x, y, xv, yv = data(seed, 50.0 if regime == "scale50" else 1.0)
            out = 2 if name == "nll" else 1
            model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, out))
            if regime == "bias_neg100":
                nn.init.constant_(model[-1].bias, -100.0)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            gen = torch.Generator().manual_seed(seed)
            perm, pos, history = torch.randperm(len(x), generator=gen), 0, []
            for step in range(1, 301):
                if pos + 128 > len(x):
                    perm, pos = torch.randperm(len(x), generator=gen), 0
                idx = perm[pos:pos + 128]
                pos += 128
                loss = loss_fn(name, model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % 25 == 0:
                    with torch.no_grad():
                        z = model(xv)
                        score = z[:, 1] - z[:, 0] if out == 2 else z[:, 0]
                        history.append((step, loss_fn(name, z, yv).item(), auc(score, yv)))
            results.append((regime, name, seed, history[-1]))
print(f"hand-written script: {len(results)} runs in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
"""

SWEEP_GRID = ["experiment=saturation", "+regime=scale50,bias_neg100"]


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: a command's own share of a shared
    machine, steadier than its wall time when other work competes for the cores."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sweep_bench(args: argparse.Namespace) -> dict[str, float]:
    """--sweep: the hand-written script, the basic launcher and the stacked launcher, each a whole process."""
    import json

    print(f"lossbench.bench --sweep: the saturation grid (30 runs), {os.cpu_count()} cores, torch threads "
          f"{args.threads or 'default'}; each command timed as a whole process, {args.repeats} round(s), the commands "
          "alternating", flush=True)
    walls: dict[str, list[float]] = {"hand": [], "basic": [], "stacked": []}
    cpus: dict[str, list[float]] = {"hand": [], "basic": [], "stacked": []}
    fixed: dict[str, list[float]] = {"basic": [], "stacked": []}
    fixed_cpu: dict[str, list[float]] = {"basic": [], "stacked": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.repeats):
            for name in (("hand", "basic", "stacked") if rnd % 2 == 0 else ("stacked", "basic", "hand")):
                sweep_dir = Path(tmp) / f"{name}{rnd}"
                threads = [str(args.threads)] if args.threads else []
                if name == "hand":
                    cmd = [sys.executable, "-c", HAND_SCRIPT, *threads]
                else:
                    cmd = [sys.executable, "-m", "lossbench", "-m", *SWEEP_GRID, f"hydra.sweep.dir={sweep_dir}",
                           *(["hydra/launcher=stacked"] if name == "stacked" else []),
                           *([f"trainer.threads={args.threads}"] if args.threads else [])]
                t0, c0 = time.perf_counter(), _children_cpu()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
                if proc.returncode:
                    raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-2000:]}")
                walls[name].append(wall)
                cpus[name].append(cpu)
                if name != "hand":
                    jobs = [read_json(p) or {} for p in sorted(sweep_dir.glob("*/summary.json"))]
                    if len(jobs) != 30 or any(j.get("status") not in ("completed", "diverged") for j in jobs):
                        raise RuntimeError(f"{name}: {len(jobs)} jobs ended, not 30:\n{proc.stderr[-2000:]}")
                    # members of a stack share one loop: each stack's counted once
                    loops = {tuple((j.get("stack") or {}).get("members") or [i]): (j.get("loop_time_s") or 0.0,
                                                                                   j.get("loop_cpu_s") or 0.0)
                             for i, j in enumerate(jobs)}.values()
                    fixed[name].append((wall - sum(w for w, _ in loops)) / len(jobs))
                    fixed_cpu[name].append((cpu - sum(c for _, c in loops)) / len(jobs))
                print(f"  round {rnd + 1}: {name:8s} {wall:6.2f}s wall {cpu:6.2f}s CPU" +
                      (f"   fixed cost per job {fixed[name][-1] * 1000:6.0f} ms wall, "
                       f"{fixed_cpu[name][-1] * 1000:6.0f} ms CPU" if name != "hand" else ""), flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"{'':40s} {'wall time':>10s} {'vs hand':>8s} {'fixed/job':>10s} {'CPU time':>9s} {'vs hand':>8s}")
    rows = {"hand": "plain PyTorch script, one process", "basic": "python -m lossbench -m (basic launcher)",
            "stacked": "the same with hydra/launcher=stacked"}
    for k, label in rows.items():
        extra = f"{statistics.median(fixed[k]) * 1000:8.0f}ms" if k in fixed else ""
        print(f"{label:40s} {med[k]:9.2f}s {med[k] / med['hand']:7.2f}x {extra:>10s} {cpu_med[k]:8.2f}s "
              f"{cpu_med[k] / cpu_med['hand']:7.2f}x")
    # each round's three commands ran back to back: their ratios cancel the machine's drift between rounds
    paired = {k: statistics.median(w / h for w, h in zip(walls[k], walls["hand"], strict=True))
              for k in ("basic", "stacked")}
    print(f"per round, side by side (median of the rounds' ratios): basic/hand {paired['basic']:.2f}x, "
          f"stacked/hand {paired['stacked']:.2f}x")
    result = {"basic_vs_hand": med["basic"] / med["hand"], "stacked_vs_hand": med["stacked"] / med["hand"],
              "basic_vs_hand_paired": paired["basic"], "stacked_vs_hand_paired": paired["stacked"],
              "basic_vs_hand_cpu": cpu_med["basic"] / cpu_med["hand"],
              "stacked_vs_hand_cpu": cpu_med["stacked"] / cpu_med["hand"],
              "fixed_ms_basic": statistics.median(fixed["basic"]) * 1000,
              "fixed_ms_stacked": statistics.median(fixed["stacked"]) * 1000,
              "fixed_cpu_ms_basic": statistics.median(fixed_cpu["basic"]) * 1000,
              "fixed_cpu_ms_stacked": statistics.median(fixed_cpu["stacked"]) * 1000}
    print(" ".join(f"{k}={v:.3f}" for k, v in result.items()))
    print(json.dumps({"walls": walls, "cpu": cpus}))
    return result


# --- lossbench.watch's overhead ------------------------------------------------------------------------------
def watch_bench(args: argparse.Namespace) -> dict[str, float]:
    """--watch: loop (b), the bare step, with a plain criterion and with the same criterion in lossbench.watch
    (TensorBoard events to a temporary directory), back to back in each round, in alternating order; the
    overhead 1 - watched/plain per round and its median. Criteria: CrossEntropyLoss on the logits, and (fp32)
    BCELoss on sigmoid probabilities against one-hot targets."""
    from lossbench.tools.watcher import watch

    device = train.pick_device(args.device)
    threads = args.threads or os.cpu_count() or 1
    cfg = compose_cfg(args)
    x, y, _, source = training_tensors(args, cfg, device)
    cases = {"ce": (torch.nn.CrossEntropyLoss, lambda z: z, y)}
    if args.precision == "fp32":
        cases["bce"] = (torch.nn.BCELoss, torch.sigmoid, F.one_hot(y, 10).float())
    print(f"lossbench.bench --watch: model={args.model} batch_size={args.batch_size} steps={args.steps} "
          f"repeats={args.repeats} device={device} precision={args.precision} threads={threads} clock={args.clock} "
          f"watch(every=50, detail_every={args.watch_detail_every}); data: {source}", flush=True)
    overheads: dict[str, list[float]] = {c: [] for c in cases}
    extra_us: dict[str, list[float]] = {c: [] for c in cases}  # the wrapper's time per call, from the two rates
    rates: dict[str, list[float]] = {f"{c}_{m}": [] for c in cases for m in ("plain", "watched")}
    for rnd in range(args.repeats + 1):  # round 0: warm-up, not recorded
        n = min(args.warmup_steps, args.steps) if rnd == 0 else args.steps
        for case, (cls, head, targets) in cases.items():
            rate = {}
            for mode in ("plain", "watched") if rnd % 2 else ("watched", "plain"):
                with tempfile.TemporaryDirectory() as tmp:
                    criterion = cls() if mode == "plain" else watch(
                        cls(), log_dir=tmp, detail_every=args.watch_detail_every)
                    torch.set_num_threads(threads)
                    w, c = bare_loop(args, cfg, device, x, targets, n, lambda z, t: criterion(head(z), t))  # noqa: B023
                    if mode == "watched":
                        criterion.close()
                rate[mode] = w if args.clock == "wall" else c
            if rnd:
                overheads[case].append(1 - rate["watched"] / rate["plain"])
                extra_us[case].append(1e6 * args.batch_size * (1 / rate["watched"] - 1 / rate["plain"]))
                for mode in rate:
                    rates[f"{case}_{mode}"].append(rate[mode])
                print(f"  round {rnd}: {case:4s} plain {rate['plain']:8.0f} samples/s  watched {rate['watched']:8.0f} "
                      f"samples/s  overhead {overheads[case][-1]:+.3f} ({extra_us[case][-1]:+.0f} us a call)", flush=True)
    for key, values in rates.items():
        print(f"median samples/s ({args.clock}) {key:12s} {statistics.median(values):9.0f}")
    for case, values in extra_us.items():
        print(f"median time lossbench.watch adds per call ({args.clock}), {case}: {statistics.median(values):.0f} us")
    med = {c: statistics.median(v) for c, v in overheads.items()}
    print(" ".join(f"watch_overhead_{c}={v:.3f}" for c, v in med.items()), flush=True)
    return med


# --- stacked sweeps ------------------------------------------------------------------------------------------
STACK_CASES = {  # name: (K, overrides per job k)
    "K8": (8, lambda k: ["experiment=saturation", f"loss={('bce', 'bce_logits', 'bce_manual')[k % 3]}", f"seed={k}"]),
    "K32": (32, lambda k: ["experiment=saturation", f"loss={('bce', 'bce_logits', 'bce_manual')[k % 3]}",
                           f"seed={k}"]),
    "mnist_K8": (8, lambda k: ["data=mnist", "loss=ce", "optim=adam", "optim.lr=0.001", "trainer.max_steps=300",
                               "trainer.eval_every=100", "trainer.log_every=50", f"seed={k}"]),
}


def stacked_worker(args: argparse.Namespace) -> None:
    """One timing in this fresh process: the case's K jobs through train.run_jobs, alone or stacked. Prints JSON."""
    import json
    import resource

    case, mode = args.stacked_worker
    k, overrides = STACK_CASES[case]
    root = ["hydra.run.dir=unused", f"trainer.device={args.device}"] + (
        [f"data.root={args.data_root}", "data.download=false"] if case.startswith("mnist") else [])
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfgs = [compose("config", overrides=[*root, *overrides(i)]) for i in range(k)]
        warm = [compose("config", overrides=[*root, *overrides(i), "trainer.max_steps=20"]) for i in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        train.run_jobs([(c, Path(tmp) / "warm" / str(i)) for i, c in enumerate(warm)], stacked=mode == "stacked")
        t0 = time.perf_counter()
        results = train.run_jobs([(c, Path(tmp) / str(i)) for i, c in enumerate(cfgs)], stacked=mode == "stacked")
        wall = time.perf_counter() - t0
    bad = [r for r in results if not isinstance(r, dict) or r.get("status") not in ("completed", "diverged")]
    if bad:
        raise RuntimeError(f"{case} {mode}: {bad[0]}")
    print(json.dumps({"wall": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "stack_sizes": sorted({r.get("stack", {}).get("size", 1) for r in results})}))


def stacked_bench(args: argparse.Namespace) -> dict[str, float]:
    import json

    cases = [c for c in STACK_CASES if not c.startswith("mnist") or has_mnist(args.data_root)]
    print(f"lossbench.bench --stacked: {args.repeats} rounds, {os.cpu_count()} cores, device={args.device}; "
          f"cases {', '.join(cases)}" + ("" if "mnist_K8" in cases else " (no MNIST: mnist_K8 skipped)"), flush=True)
    ratios: dict[str, list[float]] = {c: [] for c in cases}
    peak: dict[str, dict[str, float]] = {c: {} for c in cases}
    for rnd in range(1, args.repeats + 1):
        for case in cases:
            walls = {}
            for mode in (("alone", "stacked") if rnd % 2 else ("stacked", "alone")):  # alternate which goes first
                cmd = [sys.executable, "-m", "lossbench.bench", "--stacked-worker", case, mode, "--device", args.device,
                       *(["--data-root", args.data_root] if args.data_root else [])]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                walls[mode] = out["wall"]
                peak[case][mode] = max(peak[case].get(mode, 0.0), out["peak_rss_mb"])
            ratios[case].append(walls["alone"] / walls["stacked"])
            print(f"  round {rnd}: {case:9s} alone {walls['alone']:7.2f}s  stacked {walls['stacked']:7.2f}s  "
                  f"speedup {ratios[case][-1]:.2f}x", flush=True)
    for case in cases:
        print(f"peak resident memory {case}: alone {peak[case]['alone']:.0f} MB, stacked {peak[case]['stacked']:.0f} MB")
    med = {c: statistics.median(r) for c, r in ratios.items()}
    print(" ".join(f"stacked_speedup_{c}={med[c]:.3f}" for c in cases if not c.startswith("mnist")))
    if "mnist_K8" in med:
        print(f"stacked_speedup_mnist_K8={med['mnist_K8']:.3f}")
    return med


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.stacked_worker:
            stacked_worker(args)
        elif args.stacked:
            stacked_bench(args)
        elif args.sweep:
            sweep_bench(args)
        elif args.sweep_check:
            sweep_check(args)
        elif args.watch:
            watch_bench(args)
        else:
            benchmark(args)
    except LossbenchError as e:  # e.g. --device cuda without CUDA
        print(f"lossbench.bench: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    raise SystemExit(main())
