"""Distillation (loss=kd) from a finished run: the objective against Hinton et al.'s formula, the three KL
pitfalls each shown wrong, the teacher's logits packed into the targets, and every teacher that is refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lossbench import data, losses, models, store
from lossbench.config import validate
from lossbench.engine import teacher
from lossbench.errors import ConfigError
from lossbench.losses import registry
from tests.conftest import cli, make_cfg, run_cfg

KD_LOSSES = tuple(s.name for s in registry.specs() if s.teacher)

C3 = ["data.n_classes=3", "data.n_train=1200", "data.n_val=600", "logger.enabled=false"]


@pytest.fixture(scope="module")
def teacher3(tmp_path_factory):
    """A completed softmax teacher on the 3-class synthetic task."""
    d = tmp_path_factory.mktemp("teacher3")
    s = run_cfg(d, *C3, "loss=ce", "trainer.max_steps=150", "model.hidden=[64,64]")
    assert s["status"] == "completed"
    return d


def kd(name: str = "kd", *over: str, c: int = 5):
    return losses.build(make_cfg(f"loss={name}", *over).loss, "softmax", c, torch.full((c,), 5))


def batch(n: int = 64, c: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z, v = torch.randn(n, c, generator=g) * 3, torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    return z, v, y


def hinton(z, v, y, temp, alpha):
    """alpha T^2 KL(softmax(v/T) || softmax(z/T)) per sample + (1 - alpha) CE, written out in float64."""
    z, v = z.double(), v.double()
    p, log_p, log_q = torch.softmax(v / temp, 1), torch.log_softmax(v / temp, 1), torch.log_softmax(z / temp, 1)
    kl = (p * (log_p - log_q)).sum(1).mean()
    ce = -torch.log_softmax(z, 1)[torch.arange(len(y)), y].mean()
    return alpha * temp**2 * kl + (1 - alpha) * ce


@pytest.mark.parametrize(("temp", "alpha"), [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0)])
def test_kd_is_hintons_objective(temp, alpha):
    z, v, y = batch()
    obj = kd("kd", f"loss.T={temp}", f"loss.alpha={alpha}")
    t = losses.pack_teacher(y, v)
    assert t.shape == (64, 6) and torch.equal(losses.unpack_teacher(t)[0], y)
    want = float(hinton(z, v, y, temp, alpha))
    assert float(obj(z, t)) == pytest.approx(want, rel=1e-5)
    assert float(obj.exact(z, t)) == pytest.approx(want, rel=1e-5)


def test_kd_distils_unlabelled_samples_and_averages_ce_over_the_labelled():
    z, v, y = batch()
    y[::4] = data.IGNORE_INDEX
    keep = y != data.IGNORE_INDEX
    obj = kd("kd", "loss.T=4", "loss.alpha=0.5")
    got = float(obj(z, losses.pack_teacher(y, v)))
    soft = 0.5 * 16 * F.kl_div(F.log_softmax(z / 4, 1), F.softmax(v / 4, 1), reduction="batchmean")
    want = soft + 0.5 * F.cross_entropy(z[keep], y[keep])
    assert got == pytest.approx(float(want), rel=1e-5)
    assert not obj.wrong(z, losses.pack_teacher(y, v))[~keep].any()


def test_kd_mean_divides_the_soft_term_by_the_number_of_classes():
    z, v, y = batch()
    t = losses.pack_teacher(y, v)
    right, mean = kd("kd", "loss.alpha=1"), kd("kd_mean", "loss.alpha=1")
    with pytest.warns(UserWarning, match="'mean' divides the total loss by both the batch size and the support size"):
        wrong = float(mean(z, t))
    assert wrong == pytest.approx(float(right(z, t)) / 5, rel=1e-5)  # C = 5 times too small
    assert float(mean.exact(z, t)) == pytest.approx(float(right(z, t)), rel=1e-5)  # loss_gap shows the error


def test_kd_prob_is_not_a_divergence():
    z, v, y = batch()
    obj = kd("kd_prob", "loss.alpha=1", "loss.T=1")
    at_teacher = float(obj(v, losses.pack_teacher(y, v)))  # student = teacher: a divergence would be 0
    assert at_teacher < -0.1
    assert float(obj(z, losses.pack_teacher(y, v))) != pytest.approx(float(hinton(z, v, y, 1.0, 1.0)), rel=0.1)


def test_kd_no_t2_has_the_right_value_but_a_gradient_t2_times_too_small():
    z, v, y = batch()
    t = losses.pack_teacher(y, v)
    temp = 20.0
    right, no_t2 = kd("kd", f"loss.T={temp}", "loss.alpha=1"), kd("kd_no_t2", f"loss.T={temp}", "loss.alpha=1")
    kl = F.kl_div(F.log_softmax(z / temp, 1), F.softmax(v / temp, 1), reduction="batchmean")
    assert float(no_t2(z, t)) == pytest.approx(float(kl), rel=1e-5)  # the KL's value is right
    g = [torch.autograd.grad(obj(zz, t), zz)[0] for obj in (right, no_t2) for zz in [z.clone().requires_grad_(True)]]
    assert float(g[0].norm() / g[1].norm()) == pytest.approx(temp**2, rel=1e-4)
    # with T^2 the soft gradient keeps its scale across temperatures; without it, it shrinks as 1/T^2
    g4 = torch.autograd.grad(kd("kd", "loss.T=4", "loss.alpha=1")(zz := z.clone().requires_grad_(True), t), zz)[0]
    assert 0.3 < float(g[0].norm() / g4.norm()) < 3


def test_attach_packs_the_teachers_logits_computed_once(teacher3):
    cfg = make_cfg(*C3, "loss=kd", f"loss.teacher={teacher3}", "data.unlabeled_frac=0.5")
    ds = teacher.attach(cfg, data.load(cfg.data), torch.device("cpu"))
    ck = store.load_checkpoint(teacher3 / store.CHECKPOINT)
    model = models.build(OmegaConf.create(ck["config"]).model, (20,), 3)
    model.load_state_dict(ck["model"])
    with torch.no_grad():
        v_train, v_val = model(ds.x_train), model(ds.x_val)
    y, v = losses.unpack_teacher(ds.t_train)
    assert torch.equal(y, ds.y_train) and (y == data.IGNORE_INDEX).sum() == 600
    assert torch.allclose(v, v_train, atol=1e-6) and torch.allclose(ds.t_val[:, 1:], v_val, atol=1e-6)
    info = ds.info["teacher"]
    assert info["dir"] == str(teacher3) and info["val_accuracy_here"] == pytest.approx(
        float((v_val.argmax(1) == ds.y_val).float().mean()))


@pytest.mark.parametrize("loss", KD_LOSSES)
def test_distillation_runs_and_diverges_cleanly(tmp_path, teacher3, loss):
    s = run_cfg(tmp_path / "ok", *C3, f"loss={loss}", f"loss.teacher={teacher3}", "trainer.max_steps=100",
                "model.hidden=[16]", "optim=adam")
    assert s["status"] == "completed" and s["data"]["teacher"]["dir"] == str(teacher3)
    if loss != "kd_prob":
        assert s["final"]["val/accuracy"] > 0.6
    boom = run_cfg(tmp_path / "boom", *C3, f"loss={loss}", f"loss.teacher={teacher3}", "optim.lr=1e30",
                   "trainer.max_steps=40")
    assert boom["status"] == "diverged"


# --- teachers that are refused -------------------------------------------------------------------------------
def copy_run(src, dst, **changes):
    shutil.copytree(src, dst)
    s = json.loads((dst / store.SUMMARY).read_text())
    for key, value in changes.items():
        if key == "data":
            s["config"]["data"].update(value)
        else:
            s[key] = value
    (dst / store.SUMMARY).write_text(json.dumps(s))
    return dst


def test_teacher_missing_unfinished_or_of_another_task_is_refused(tmp_path, teacher3):
    def refused(teacher_dir, match, *over):
        cfg = make_cfg(*C3, "loss=kd", *([f"loss.teacher={teacher_dir}"] if teacher_dir else []), *over)
        validate(cfg)  # a valid config: the teacher is checked when the run starts, before the data is loaded
        with pytest.raises(ConfigError, match=match):
            teacher.check(cfg)

    refused(None, r"loss=kd needs a teacher: set loss.teacher=<run dir>")
    refused(tmp_path / "nowhere", r"the directory does not exist")
    refused(copy_run(teacher3, tmp_path / "failed", status="failed"), r"status is 'failed'; a teacher must be a completed run")
    no_ck = copy_run(teacher3, tmp_path / "no_ck")
    (no_ck / store.CHECKPOINT).unlink()
    refused(no_ck, r"no checkpoint.pt in the teacher run")
    refused(copy_run(teacher3, tmp_path / "sig", head="sigmoid"), r"has a sigmoid head; .* must be a softmax run")
    refused(teacher3, r"another task \(data.n_classes: teacher 3, student 4\)", "data.n_classes=4")
    refused(teacher3, r"another task \(data.scale: teacher 1.0, student 2.5\)", "data.scale=2.5")
    refused(copy_run(teacher3, tmp_path / "ml", data={"task": "multilabel"}),
            r"another task \(data.task: teacher 'multilabel', student 'multiclass'\)")
    refused(copy_run(teacher3, tmp_path / "mn", data={"name": "mnist"}), r"trained on data=mnist, this run uses data=synthetic")


def test_teacher_weights_that_do_not_fit_are_refused(tmp_path, teacher3):
    bad = copy_run(teacher3, tmp_path / "wide")
    ck = store.load_checkpoint(bad / store.CHECKPOINT)
    ck["config"]["model"]["hidden"] = [32, 32]  # the weights are 64 wide
    store.save_checkpoint(bad / store.CHECKPOINT, ck)
    s = json.loads((bad / store.SUMMARY).read_text())  # the summary agrees (else: "names another model")
    s["config"]["model"]["hidden"] = [32, 32]
    (bad / store.SUMMARY).write_text(json.dumps(s))
    cfg = make_cfg(*C3, "loss=kd", f"loss.teacher={bad}")
    with pytest.raises(ConfigError, match=r"its weights do not fit a model for this data .*size mismatch"):
        teacher.attach(cfg, data.load(cfg.data), torch.device("cpu"))


def test_cli_refuses_a_missing_teacher_in_one_line(tmp_path):
    r = cli("loss=kd", f"loss.teacher={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"lossbench: error: loss.teacher={tmp_path / 'nowhere'}: the directory does not "
                                "exist; point it at a completed lossbench run.")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.set_sync_debug_mode)")
@pytest.mark.parametrize("loss", KD_LOSSES)
def test_distillation_never_synchronises_in_a_step(tmp_path, teacher3, loss):
    s = run_cfg(tmp_path, *C3, f"loss={loss}", f"loss.teacher={teacher3}", "loss.alpha=0.5", "trainer.device=cuda",
                "trainer.sync_debug=true", "trainer.max_steps=100", "numerics.every=1", "data.unlabeled_frac=0.2")
    assert s["status"] == "completed" and s["numerics"]["detail_steps"] == 100
