"""lossbench's monitors in a plain PyTorch loop: copy this file and put your own model and data in.

    python examples/own_loop_watch.py           # Sigmoid + BCELoss on raw 0-255 features: it stalls, and says so
    python examples/own_loop_watch.py --fixed   # raw logits to BCEWithLogitsLoss instead: it learns
    tensorboard --logdir runs/watch             # train/loss and the watch/* group of both
    python -m lossbench.doctor runs/watch/bce/batch.pt --loss bce   # the saved batch, checked from the command line

Two tools: ``lossbench.watch(criterion)`` is the criterion with lossbench's numerics monitors (saturation,
BCELoss's clamp, samples with a zero gradient, non-finite values) written to TensorBoard every ``every`` calls and
flagged once with a fix; ``lossbench.check_setup(outputs, targets, criterion)`` names the classic mistakes that
one batch of values gives away. About 10 s on 2 CPU cores. See docs/watch.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import lossbench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixed", action="store_true", help="raw logits to BCEWithLogitsLoss (no sigmoid in the model)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", default="runs/watch")
    args = p.parse_args()
    torch.manual_seed(args.seed)

    # data: 20 raw intensities in [0, 255] (never normalised), a linear boundary
    x = torch.rand(4000, 20) * 255
    y = ((x - 127.5) @ torch.randn(20) > 0).float().unsqueeze(1)

    # the model and the loss, as a user writes them
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    if not args.fixed:
        model.append(nn.Sigmoid())
    name = "bce_logits" if args.fixed else "bce"
    log_dir = Path(args.log_dir) / name
    criterion = lossbench.watch(nn.BCEWithLogitsLoss() if args.fixed else nn.BCELoss(), log_dir=log_dir, every=25)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    # the loop: nothing in it is lossbench's but the criterion
    for _ in range(args.steps):
        i = torch.randint(0, len(x), (128,))
        loss = criterion(model(x[i]), y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    report = criterion.report()  # writes the last window too
    criterion.close()
    with torch.no_grad():
        out = model(x)
        accuracy = (((torch.sigmoid(out) if args.fixed else out) > 0.5).float() == y).float().mean().item()
    print(f"{name}: {report.calls} calls, last loss {report.loss:.4g}, accuracy {accuracy:.3f}")
    print("last window:", ", ".join(f"{k.split('/')[1]} {v:.3g}" for k, v in report.window.items()))
    print("flags:", ", ".join(report.flags) or "none")

    # one batch, checked and saved for `python -m lossbench.doctor`
    batch = {"outputs": out[:256].clone(), "targets": y[:256].clone()}
    lossbench.check_setup(batch["outputs"], batch["targets"], criterion.criterion)
    torch.save(batch, log_dir / "batch.pt")
    print(f"events and batch.pt in {log_dir}")


if __name__ == "__main__":
    main()
