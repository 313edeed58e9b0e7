"""Bad input, everywhere a user can type: a one-paragraph error, a non-zero exit, before any training.

In-process cases check the error type and message (LossbenchError is what `python -m lossbench` turns into
"lossbench: error: ..." and exit 2, with no traceback); a representative set runs the real command line.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from lossbench import ConfigError, DataError, store
from tests.conftest import cli, needs_mnist, run_cfg

FAST = ["trainer.max_steps=20", "logger.enabled=false"]


def refused(run_dir: Path, *overrides: str, match: str, error: type = ConfigError) -> str:
    """The run raises `error` matching `match`, in one paragraph, and nothing was trained."""
    with pytest.raises(error, match=match) as info:
        run_cfg(run_dir, *FAST, *overrides)
    message = str(info.value)
    assert "\n" not in message and len(message) < 1000
    assert not (run_dir / store.CHECKPOINT).exists()
    return message


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["loss=ce", "head=sigmoid"], r"Invalid head/loss pair head=sigmoid loss=ce: .*Valid pairs: "),
        (["loss=bce_logits", "head=softmax"], r"Invalid head/loss pair .*use head=sigmoid"),
        (["head=tanh"], r"Unknown head 'tanh'. Valid choices: head=sigmoid, softmax"),
        (["loss=ce", "loss.pos_weight=3"], r"pos_weight is for sigmoid \(BCE\) losses.*Use loss.class_weight"),
        (["loss=ce", "data.n_classes=3", "loss.class_weight=[1,2]"],
         r"class_weight has 2 entries but the data has 3 classes.*class_weight=\[1.0,1.0,1.0\]"),
        (["loss=ce", "loss.class_weight=[1,-2]"], r"class_weight entry must be >= 0, got -2"),
        (["loss=ce", "loss.class_weight=balanced"], r"Unknown loss.class_weight='balanced'. Valid choices"),
        (["optim.lr=0"], r"optim.lr must be > 0, got 0"),
        (["optim.lr=-0.1"], r"optim.lr must be > 0, got -0.1"),
        (["optim.lr=fast"], r"optim.lr must be a finite number, got 'fast'"),
        (["trainer.batch_size=0"], r"trainer.batch_size must be an integer >= 1, got 0"),
        (["trainer.batch_size=-8"], r"trainer.batch_size must be an integer >= 1, got -8"),
        (["trainer.max_steps=0"], r"trainer.max_steps must be an integer >= 1, got 0"),
        (["trainer.epochs=0"], r"trainer.epochs must be an integer >= 1, got 0"),
        (["data.imbalance_ratio=0.5"], r"imbalance_ratio is majority : minority and must be >= 1.*got 0.5"),
        (["data=imbalanced", "data.imbalance_ratio=5000", "data.n_train=1000"],
         r"imbalance_ratio=5000.* leaves class 1 with no train samples.*Raise data.n_train or lower"),
        (["trainer.precision=fp8"], r"Unknown precision 'fp8'. Valid choices: trainer.precision=bf16, fp16, fp32"),
        (["trainer.device=tpu"], r"Unknown trainer.device='tpu'. Valid choices: auto, cpu, cuda"),
    ],
)
def test_bad_config_is_refused_before_training(tmp_path, overrides, match):
    refused(tmp_path, *overrides, match=match)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    refused(tmp_path, "trainer.device=cuda", match=r"trainer.device=cuda but CUDA is not available.*trainer.device=cpu")


def test_precision_the_device_cannot_do(tmp_path, monkeypatch):
    # No CPU build of torch lacks CPU autocast today; this is what a device without it gets.
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    refused(tmp_path, "trainer.device=cpu", "trainer.precision=fp16",
            match=r"trainer.precision=fp16: autocast is not available on cpu. Use trainer.precision=fp32")


def test_resume_without_a_checkpoint(tmp_path):
    refused(tmp_path, "trainer.resume=true", match=r"trainer.resume=true: no checkpoint at .*checkpoint.pt")
    refused(tmp_path, f"trainer.resume={tmp_path / 'nowhere'}", match=r"no checkpoint at .*nowhere/checkpoint.pt")
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


def test_mnist_download_failing_offline(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST as TorchvisionMNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error Name or service not known>")

    monkeypatch.setattr(TorchvisionMNIST, "download", offline)
    refused(tmp_path / "run", "data=mnist", "model=linear", "data.download=true", f"data.root={tmp_path / 'd'}",
            error=DataError, match=r"MNIST not found: .*downloading it failed \(Error downloading train-images.*not known")


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("tiny", r"have shape \(10, 28, 28\), expected \(60000, 28, 28\): corrupt or truncated"),
        ("truncated", r"are corrupt or not MNIST \(RuntimeError: shape .*Delete them and download again"),
        ("garbage", r"are corrupt or not MNIST .*Delete them and download again"),
    ],
)
def test_mnist_corrupt(tmp_path, kind, match):
    root = fake_mnist(tmp_path / "data", kind)
    refused(tmp_path / "run", *MNIST, f"data.root={root}", error=DataError, match=match)


@needs_mnist
@pytest.mark.parametrize("classes", ["[10]", "[-1]", "[]", "[0,0]", "[0,1,2,3,4,5,6,7,8,9]"])
def test_positive_classes_outside_the_labels(tmp_path, classes):
    refused(tmp_path, "data=mnist", "model=linear", "data.task=binary", f"data.positive_classes={classes}",
            "data.n_train=1000", "data.n_val=500", match=r"data.positive_classes")


# --- the real command line: exit codes, messages, no traceback --------------------------------------------


def assert_clean_error(r, code: int, *parts: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for part in parts:
        assert part in r.stderr


def test_cli_unknown_group_choice_and_key(tmp_path):
    # Hydra's own messages, which name the choices / the key; its exit code is 1.
    r = cli("loss=hinge", f"hydra.run.dir={tmp_path}")
    assert_clean_error(r, 1, "Could not find 'loss/hinge'", "Available options in 'loss'", "bce_logits")
    r = cli("trainer.max_stpes=5", f"hydra.run.dir={tmp_path}")
    assert_clean_error(r, 1, "Could not override 'trainer.max_stpes'", "Key 'max_stpes' is not in struct")


def test_cli_bad_value_exits_2_before_training(tmp_path):
    # Every LossbenchError (ConfigError, DataError) takes this path in lossbench.__main__.
    r = cli("optim.lr=0", f"hydra.run.dir={tmp_path}")
    assert_clean_error(r, 2, "lossbench: error: optim.lr must be > 0, got 0.")
    assert store.read_json(tmp_path / store.SUMMARY)["status"] == "failed"
    assert not (tmp_path / store.CHECKPOINT).exists()


def test_report_on_a_path_without_runs(tmp_path):
    pytest.importorskip("lossbench.report")
    (tmp_path / "empty").mkdir()
    r = cli("-m", "lossbench.report", str(tmp_path / "empty"))
    assert_clean_error(r, 2, "no runs found under")


def test_deterministic_run_hitting_an_op_without_a_deterministic_kernel_is_a_clear_error(tmp_path, monkeypatch):
    """On CUDA some ops (e.g. scatter-adds in backward) have no deterministic kernel; under
    trainer.deterministic=true PyTorch raises mid-run. Simulated on the CPU with put_, which has none here."""
    from lossbench import losses

    forward = losses.Objective.forward

    def with_put(self, z, y):
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
        return forward(self, z, y)

    monkeypatch.setattr(losses.Objective, "forward", with_put)
    try:
        with pytest.raises(ConfigError, match=r"trainer.deterministic=true.*put_ does not have a deterministic "
                                              r"implementation.*trainer.deterministic=false") as info:
            run_cfg(tmp_path, *FAST, "trainer.deterministic=true")
    finally:
        torch.use_deterministic_algorithms(False)  # the run switched it on for the process
    assert "\n" not in str(info.value)
    assert store.read_json(tmp_path / store.SUMMARY)["status"] == "failed"
