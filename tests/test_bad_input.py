"""Bad input, everywhere a user can type: one line, exit 2, before any training, nothing left behind.

Most cases run `python -m lossbench` in this process (tests/inprocess.py: the CLI's own code path, Hydra
included); those that need the data check the error train.run raises (LossbenchError is what the CLI turns
into "lossbench: error: ..." and exit 2); a representative set runs the real command line in a subprocess.
Every key's type and range: tests/test_config_schema.py.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import torch

from lossbench import store
from lossbench.errors import ConfigError, DataError
from tests.conftest import cli, mnist_root, needs_mnist, run_cfg
from tests.inprocess import run_cli

FAST = ["trainer.max_steps=20", "logger.enabled=false"]


def refused(run_dir: Path, *overrides: str, match: str, error: type = ConfigError) -> str:
    """The run raises `error` matching `match`, in one paragraph, and nothing was trained."""
    with pytest.raises(error, match=match) as info:
        run_cfg(run_dir, *FAST, *overrides)
    message = str(info.value)
    assert "\n" not in message and len(message) < 1000
    assert not (run_dir / store.CHECKPOINT).exists()
    return message


def cli_refused(tmp_path: Path, *args: str, match: str) -> str:
    """`python -m lossbench ARGS` (in-process) exits 2 with one line matching `match`, and leaves no run
    directory behind (tmp_path/run unless ARGS set hydra.run.dir)."""
    import re

    run_dir = tmp_path / "run"
    r = run_cli(*FAST, *args, *([] if any(a.startswith("hydra.run.dir=") for a in args) else
                                [f"hydra.run.dir={run_dir}"]))
    assert r.returncode == 2, (r.returncode, r.stderr, r.stdout[-2000:])
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("lossbench: error: "), r.stderr
    assert re.search(match, r.stderr), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())
    return r.stderr


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["loss=ce", "head=sigmoid"], r"Invalid head/loss pair head=sigmoid loss=ce: .*Valid pairs: "),
        (["loss=bce_logits", "head=softmax"], r"Invalid head/loss pair .*use head=sigmoid"),
        (["head=tanh"], r"Unknown head='tanh'. Valid choices: head=sigmoid, softmax"),
        (["loss=ce", "loss.pos_weight=3"], r"pos_weight is for sigmoid \(BCE\) losses.*Use loss.class_weight"),
        (["loss=ce", "data.n_classes=3", "loss.class_weight=[1,2]"],
         r"class_weight has 2 entries but the data has 3 classes.*class_weight=\[1.0,1.0,1.0\]"),
        (["loss=ce", "loss.class_weight=[1,-2]"], r"each loss.class_weight entry must be >= 0, got -2"),
        (["loss=ce", "loss.class_weight=[0,0]"], r"loss.class_weight=\[0, 0\] must have at least one positive"),
        (["loss=ce", "loss.class_weight=balanced"], r"Unknown loss.class_weight='balanced'. Valid choices"),
        (["optim.lr=0"], r"optim.lr must be > 0, got 0"),
        (["optim.lr=-0.1"], r"optim.lr must be > 0, got -0.1"),
        (["optim.lr=fast"], r"optim.lr must be a number, got 'fast'"),
        (["optim.lr=nan"], r"optim.lr must be a finite number > 0, got nan"),
        (["trainer.batch_size=0"], r"trainer.batch_size must be an integer >= 1, got 0"),
        (["trainer.batch_size=-8"], r"trainer.batch_size must be an integer >= 1, got -8"),
        (["trainer.batch_size=1e3"], r"trainer.batch_size must be an integer, got 1000.0"),
        (["trainer.max_steps=0"], r"trainer.max_steps must be an integer >= 1, got 0"),
        (["trainer.max_steps=100000000000000000000"], r"trainer.max_steps must be at most 2\*\*63 - 1"),
        (["trainer.epochs=0"], r"trainer.epochs must be an integer >= 1, got 0"),
        (["data.imbalance_ratio=0.5"], r"data.imbalance_ratio must be >= 1, got 0.5"),
        (["data=imbalanced", "data.imbalance_ratio=5000", "data.n_train=1000"],
         r"imbalance_ratio=5000.* leaves class 1 with no train samples.*Raise data.n_train or lower"),
        (["trainer.precision=fp8"], r"Unknown trainer.precision='fp8'. Valid choices: trainer.precision=bf16, fp16, fp32"),
        (["trainer.device=tpu"], r"Unknown trainer.device='tpu'. Valid choices: auto, cpu, cuda"),
        (["trainer.resume=[1]"], r"trainer.resume must be false, true .* or the path of a run directory, got \[1\]"),
        (["model=cnn", "data=mnist", "model.channels=[8]"], r"model.channels must list the 2 conv layers' channels"),
        (["data=mnist", "data.task=binary", "data.positive_classes=[0,1,2,3,4,5,6,7,8,9]"],
         r"data.positive_classes=\[0, 1, .*not all ten"),
        (["data=mnist", "data.positive_classes=[0,0]"], r"data.positive_classes=\[0, 0\] must be distinct"),
        (["model.head_bias=big"], r"model.head_bias must be null, prior or a finite number, got 'big'"),
        (["loss.name=ce"], r"loss.name='ce' does not match the keys of the chosen loss config.*loss=<name>"),
        (["trainer.target_metric=val/auc", "trainer.target_value=2"], r"trainer.target_value must be in \[0, 1\]"),
        (["loss.reduction=positives"], r"Unknown loss.reduction='positives'. Valid choices: mean, num_pos, sum"),
        (["loss=bce_logits", "loss.reduction=num_pos"],
         r"loss.reduction=num_pos .* is for loss=focal on a sigmoid head; loss=bce_logits .*reduction=mean or sum"),
        (["loss=focal", "head=softmax", "loss.reduction=num_pos"],
         r"loss.reduction=num_pos .*head=softmax takes loss.reduction=mean or sum \(on a softmax head"),
        (["model.dropout=1"], r"model.dropout must be in \[0, 1\), got 1"),
        (["model.dropout=-0.1"], r"model.dropout must be in \[0, 1\), got -0.1"),
        (["model=linear", "model.dropout=0.5"], r"model.dropout is not a key of model"),
        (["data.jitter=2"], r"data.jitter is not a key of data"),
        (["data=mnist", "data.jitter=-1"], r"data.jitter must be an integer >= 0, got -1"),
        (["data=mnist", "data.jitter=1.5"], r"data.jitter must be an integer"),
        (["data=mnist", "data.jitter=28"], r"data.jitter=28 shifts the 28x28 training images .* use 0 \(off\) to 27"),
    ],
)
def test_bad_config_is_refused_before_training(tmp_path, overrides, match):
    cli_refused(tmp_path, *overrides, match=match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    refused(tmp_path, "trainer.device=cuda", match=r"trainer.device=cuda but CUDA is not available.*trainer.device=cpu")


def test_precision_the_device_cannot_do(tmp_path, monkeypatch):
    # No CPU build of torch lacks CPU autocast today; this is what a device without it gets.
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    refused(tmp_path, "trainer.device=cpu", "trainer.precision=fp16",
            match=r"trainer.precision=fp16: autocast is not available on cpu. Use trainer.precision=fp32")


def test_resume_without_a_checkpoint(tmp_path):
    cli_refused(tmp_path, "trainer.resume=true", match=r"trainer.resume=true: no checkpoint at .*checkpoint.pt")
    cli_refused(tmp_path, f"trainer.resume={tmp_path / 'nowhere'}", match=r"no checkpoint at .*nowhere/checkpoint.pt")
    assert not (tmp_path / "nowhere").exists()


# --- MNIST: missing or corrupt, offline --------------------------------------------------------------------

MNIST = ["data=mnist", "model=linear", "data.download=false"]


def idx_file(path: Path, dims: list[int], n_bytes: int | None = None) -> None:
    """An IDX file (unsigned bytes) with this header; its body is n_bytes zeros (default: the full size)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    path.write_bytes(header + bytes(n_bytes if n_bytes is not None else int(torch.tensor(dims).prod())))


def fake_mnist(root: Path, kind: str) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 60000), ("t10k", 10000)):
        images, labels = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
        if kind == "tiny":  # valid IDX files, but 10 images
            idx_file(images, [10, 28, 28])
            idx_file(labels, [10])
        elif kind == "truncated":  # the header promises 60000 images, the body stops early
            idx_file(images, [n, 28, 28], n_bytes=1000)
            idx_file(labels, [n])
        else:  # not IDX at all
            images.write_bytes(b"<html>404 Not Found</html>")
            labels.write_bytes(b"")
    return root


def test_mnist_missing_offline(tmp_path):
    msg = refused(tmp_path / "run", *MNIST, f"data.root={tmp_path / 'empty'}", error=DataError,
                  match=r"MNIST not found: looked in .*empty/MNIST/raw for train-images-idx3-ubyte")
    assert "data.root=DIR or LOSSBENCH_DATA_DIR=DIR" in msg


def offline(monkeypatch) -> None:
    from torchvision.datasets import MNIST as TorchvisionMNIST

    def download(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error Name or service not known>")

    monkeypatch.setattr(TorchvisionMNIST, "download", download)


def test_mnist_download_failing_offline(tmp_path, monkeypatch):
    offline(monkeypatch)
    refused(tmp_path / "run", "data=mnist", "model=linear", "data.download=true", f"data.root={tmp_path / 'd'}",
            error=DataError, match=r"MNIST not found: .*downloading it failed \(Error downloading train-images.*not known")


@pytest.mark.parametrize("download", ["false", "true"])
@pytest.mark.parametrize("missing", ["t10k-labels-idx1-ubyte", "train-images-idx3-ubyte"])
def test_mnist_with_one_file_missing_names_that_file(tmp_path, monkeypatch, download, missing):
    """torchvision checks all four files at once and, offline, fails to download: the message names the missing
    file, not "corrupt, delete them" (the other three are fine)."""
    offline(monkeypatch)
    root = fake_mnist(tmp_path / "data", "tiny")
    (root / "MNIST" / "raw" / missing).unlink()
    msg = refused(tmp_path / "run", "data=mnist", "model=linear", f"data.download={download}", f"data.root={root}",
                  error=DataError, match=rf"MNIST is incomplete: .*MNIST/raw lacks {missing} \(it has the other files\)")
    assert "corrupt" not in msg and "Delete" not in msg
    assert ("downloading it failed" in msg) == (download == "true")


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("tiny", r"raw/train-images-idx3-ubyte has shape \(10, 28, 28\), expected \(60000, 28, 28\): truncated"),
        ("truncated", r"raw/train-images-idx3-ubyte is corrupt or not an MNIST image file \(RuntimeError: shape "
                      r".*Delete it and download it again"),
        ("garbage", r"raw/train-images-idx3-ubyte is corrupt or not an MNIST image file .*Delete it and download it"),
    ],
)
def test_mnist_corrupt(tmp_path, kind, match):
    root = fake_mnist(tmp_path / "data", kind)
    refused(tmp_path / "run", *MNIST, f"data.root={root}", error=DataError, match=match)


def mnist_with_bad_label(tmp_path: Path, split: str, index: int, label: int) -> Path:
    """The real MNIST (linked), with one label byte of `split` overwritten."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist_root() / "MNIST" / "raw").iterdir():
        (raw / f.name).symlink_to(f)
    labels = raw / f"{split}-labels-idx1-ubyte"
    body = bytearray(labels.read_bytes())
    body[8 + index] = label  # after the 8-byte IDX header
    labels.unlink()
    labels.write_bytes(bytes(body))
    return tmp_path / "data"


@needs_mnist
@pytest.mark.parametrize("split", ["train", "t10k"])
def test_mnist_label_outside_0_to_9_is_found_at_load(tmp_path, split):
    root = mnist_with_bad_label(tmp_path, split, 1234, 200)
    refused(tmp_path / "run", *MNIST, f"data.root={root}", error=DataError,
            match=rf"raw/{split}-labels-idx1-ubyte is corrupt: label 200 at index 1234 is not a digit 0..9 "
                  r"\(1 such labels\). Delete it and download it again")


@pytest.mark.parametrize("classes", ["[10]", "[-1]", "[]", "[0,0]", "[0,1,2,3,4,5,6,7,8,9]", "3", "[a]"])
def test_positive_classes_outside_the_labels(tmp_path, classes):
    cli_refused(tmp_path, "data=mnist", "model=linear", "data.task=binary", f"data.positive_classes={classes}",
                match=r"data.positive_classes")


# --- the run directory: creatable, and left as it was by a refused run --------------------------------------


def test_run_dir_that_is_a_file_or_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    cli_refused(tmp_path, f"hydra.run.dir={tmp_path / 'file'}",
                match=r"hydra.run.dir=.*/file is an existing file, not a directory")
    cli_refused(tmp_path, f"hydra.run.dir={tmp_path / 'file' / 'run'}",
                match=r"hydra.run.dir=.*/file/run cannot be created: .*/file is a file, not a directory")
    r = run_cli("-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'file'}")
    assert r.returncode == 2 and "hydra.sweep.dir=" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (tmp_path / "file").read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_run_dir_under_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        cli_refused(tmp_path, f"hydra.run.dir={ro / 'a' / 'run'}",
                    match=r"hydra.run.dir=.*/ro/a/run cannot be created: Permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_run_dir_that_the_system_refuses(tmp_path):
    cli_refused(tmp_path, "hydra.run.dir=/proc/lossbench/run", match=r"hydra.run.dir=/proc/lossbench/run cannot be created")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_refused_single_run_leaves_no_directory_behind(tmp_path, monkeypatch):
    """Refused after Hydra made the directory (no CUDA here, MNIST missing, no checkpoint to resume): the
    directory and the parents it created are removed, a parent that existed stays."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "outputs").mkdir()
    for refusal in ("trainer.device=cuda", "trainer.resume=true",
                    f"data=mnist data.download=false data.root={tmp_path / 'none'}"):
        run_dir = tmp_path / "outputs" / "new" / "deeper" / "run"
        r = run_cli(*FAST, *refusal.split(), f"hydra.run.dir={run_dir}")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert list((tmp_path / "outputs").iterdir()) == [], refusal


def test_a_refused_run_leaves_an_existing_directory_as_it_was(tmp_path, monkeypatch):
    """An empty directory stays, empty; a finished run's directory is byte-identical after refused reruns
    into it (another config, no CUDA, nothing to resume), its .hydra record and log included."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli(*FAST, "trainer.device=cuda", f"hydra.run.dir={empty}")
    assert r.returncode == 2 and list(empty.iterdir()) == []

    done = tmp_path / "done"
    r = run_cli(*FAST, "data.n_train=500", "data.n_val=200", f"hydra.run.dir={done}")
    assert r.returncode == 0, r.stderr
    before = tree(done)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", "summary.json", "checkpoint.pt"} <= set(before)
    for refusal in (["seed=3"], ["trainer.device=cuda"], ["trainer.resume=true"]):  # nothing left to resume
        r = run_cli(*FAST, "data.n_train=500", "data.n_val=200", *refusal, f"hydra.run.dir={done}")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert tree(done) == before, refusal


def test_a_directory_held_by_a_live_run_is_not_touched(tmp_path):
    run_dir = tmp_path / "live"
    run_dir.mkdir()
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("the live run's config\n")
    with store.run_lock(run_dir):  # held the way a training process holds it
        before = tree(run_dir)
        r = run_cli(*FAST, f"hydra.run.dir={run_dir}")
        assert r.returncode == 2 and "is in use by another lossbench run" in r.stderr, r.stderr
        assert tree(run_dir) == before


def test_a_sweep_keeps_its_refused_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", *FAST, "optim.lr=0,0.1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr
    statuses = sorted(store.read_json(p)["status"] for p in sweep.glob("*/summary.json"))
    assert statuses == ["completed", "failed"]


# --- the real command line: exit codes, messages, no traceback --------------------------------------------


def assert_clean_error(r, code: int, *parts: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert r.stderr.count("\n") == 1, r.stderr
    for part in parts:
        assert part in r.stderr


def test_cli_unknown_group_choice_and_key(tmp_path):
    # Hydra's own composition errors, in one line that names the choices / the key.
    r = cli("loss=hinge", f"hydra.run.dir={tmp_path / 'run'}")
    assert_clean_error(r, 2, "lossbench: error: Could not find 'loss/hinge'. Available options in 'loss': ",
                       "asl, auc_margin, auc_pairwise, balanced_softmax, bce, bce_clipped, bce_logits,")
    r = cli("trainer.max_stpes=5", f"hydra.run.dir={tmp_path / 'run'}")
    assert_clean_error(r, 2, "lossbench: error: trainer.max_stpes is not a key of trainer (did you mean "
                             "trainer.max_steps?)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["seed=abc"], "seed must be an integer, got 'abc'."),
    (["trainer.target_value=abc"], "trainer.target_value must be a number, got 'abc'."),
    (["optim=adam", "optim.momentum=1.5"], "optim.momentum is Adam's beta1 for optim=adam and must be in [0, 1)"),
    (["optim.lr=0"], "optim.lr must be > 0, got 0.0."),
])
def test_cli_bad_value_exits_2_before_training(tmp_path, args, message):
    r = cli(*args, f"hydra.run.dir={tmp_path}")
    assert_clean_error(r, 2, f"lossbench: error: {message}")
    assert list(tmp_path.iterdir()) == []  # the directory existed: it stays, empty


def test_cli_data_error_leaves_nothing_behind(tmp_path):
    root = fake_mnist(tmp_path / "data", "tiny")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    r = cli(*MNIST, f"data.root={root}", f"hydra.run.dir={tmp_path / 'outputs' / 'run'}")
    assert_clean_error(r, 2, "MNIST is incomplete", "lacks t10k-labels-idx1-ubyte")
    assert not (tmp_path / "outputs").exists()


def test_report_on_a_path_without_runs(tmp_path):
    pytest.importorskip("lossbench.analysis.report")
    (tmp_path / "empty").mkdir()
    r = cli("-m", "lossbench.report", str(tmp_path / "empty"))
    assert_clean_error(r, 2, "no runs found under")


def test_deterministic_run_hitting_an_op_without_a_deterministic_kernel_is_a_clear_error(tmp_path, monkeypatch):
    """On CUDA some ops (e.g. scatter-adds in backward) have no deterministic kernel; under
    trainer.deterministic=true PyTorch raises mid-run. Simulated on the CPU with put_, which has none here."""
    from lossbench import losses

    forward = losses.BCEWithLogits.forward  # the default loss, bce_logits

    def with_put(self, z, y):
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
        return forward(self, z, y)

    monkeypatch.setattr(losses.BCEWithLogits, "forward", with_put)
    try:
        with pytest.raises(ConfigError, match=r"trainer.deterministic=true.*put_ does not have a deterministic "
                                              r"implementation.*trainer.deterministic=false") as info:
            run_cfg(tmp_path, *FAST, "trainer.deterministic=true")
    finally:
        torch.use_deterministic_algorithms(False)  # the run switched it on for the process
    assert "\n" not in str(info.value)
    assert store.read_json(tmp_path / store.SUMMARY)["status"] == "failed"
