"""lossbench.check_setup and `python -m lossbench.doctor`: every mistake named from the values, no false alarm
on correct set-ups (a property test over random ones), bad files in one line with exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lossbench
from lossbench.tools import doctor

GEN = torch.Generator().manual_seed(0)
Z = torch.randn(64, 1, generator=GEN) * 3  # binary logits
Y = (torch.arange(64) % 2).float().unsqueeze(1)
ZC = torch.randn(64, 5, generator=GEN) * 3  # 5-class logits
YC = torch.arange(64) % 5
Q = torch.softmax(torch.randn(64, 5, generator=GEN), dim=1)  # a teacher's probabilities
KL = nn.KLDivLoss(reduction="batchmean")


def codes(outputs, targets, criterion) -> list[str]:
    return [f.code for f in lossbench.check_setup(outputs, targets, criterion, verbose=False)]


MISTAKES = {
    "double_sigmoid": (torch.sigmoid(Z), Y, nn.BCEWithLogitsLoss()),
    "logits_to_bce": (Z, Y, nn.BCELoss()),
    "clamped": (torch.sigmoid(Z * 100), Y, nn.BCELoss()),
    "softmax_to_ce": (torch.softmax(ZC, 1), YC, nn.CrossEntropyLoss()),
    "probs_to_log_input": (torch.softmax(ZC, 1), Q, KL),
    "not_log_probs": (ZC, Q, KL),
    "log_underflow": (torch.log(torch.softmax(ZC * 100, 1)), YC, nn.NLLLoss()),
    "kl_mean": (torch.log_softmax(ZC, 1), Q, nn.KLDivLoss()),
    "kl_target": (torch.log_softmax(ZC, 1), Q.log(), KL),
    "target_dtype": (ZC, YC.int(), nn.CrossEntropyLoss()),
    "target_range": (ZC, YC + 1, nn.CrossEntropyLoss()),
    "all_ignored": (ZC, torch.full((64,), -100), nn.CrossEntropyLoss()),
    "soft_targets": (ZC, (torch.rand(64, 5, generator=GEN) > 0.5).float(), nn.CrossEntropyLoss()),
    "one_logit_ce": (Z, YC % 2, nn.CrossEntropyLoss()),
    "target_shape": (Z, Y[:, 0], nn.BCEWithLogitsLoss()),
    "pos_weight_shape": (Z, Y, nn.BCEWithLogitsLoss(pos_weight=torch.ones(3))),
    "weight_shape": (ZC, YC, nn.CrossEntropyLoss(weight=torch.ones(3))),
    "one_class": (Z, torch.ones_like(Y), nn.BCEWithLogitsLoss()),
    "nonfinite": (Z.masked_fill(Z > 2, float("nan")), Y, nn.BCEWithLogitsLoss()),
}
MORE = [  # other forms of the same mistakes
    ("probs_to_log_input", torch.softmax(ZC, 1), YC, nn.NLLLoss()),
    ("not_log_probs", ZC, YC, nn.NLLLoss()),
    ("target_range", Z, Y * 2 - 1, nn.BCEWithLogitsLoss()),  # {-1, 1} labels: accepted silently, unbounded
    ("target_range", torch.sigmoid(Z), Y * 2 - 1, nn.BCELoss()),
    ("target_dtype", ZC, YC.float(), nn.CrossEntropyLoss()),
    ("target_dtype", Z, Y.long(), nn.BCEWithLogitsLoss()),
    ("pos_weight_shape", Z[:, 0], Y[:, 0], nn.BCEWithLogitsLoss(pos_weight=torch.ones(64))),  # weights samples
    ("kl_target", torch.log_softmax(ZC, 1), Q, nn.KLDivLoss(reduction="batchmean", log_target=True)),
    ("one_class", ZC, torch.full((64,), 3), nn.CrossEntropyLoss()),
]


@pytest.mark.parametrize("code", list(MISTAKES))
def test_each_mistake_is_named_alone(code):
    assert codes(*MISTAKES[code]) == [code]


@pytest.mark.parametrize("code, outputs, targets, criterion", MORE)
def test_other_forms_of_the_mistakes(code, outputs, targets, criterion):
    assert code in codes(outputs, targets, criterion)


def test_the_documented_list_names_every_finding():
    documented = set(re.findall(r"^  ([a-z_]+) {2,}", doctor.__doc__, flags=re.M))
    assert set(MISTAKES) | {"raises"} == documented


def test_a_finding_prints_its_symptom_and_fix_and_a_correct_setup_looks_right(capsys):
    found = lossbench.check_setup(torch.sigmoid(Z), Y, nn.BCEWithLogitsLoss())
    out = capsys.readouterr().out
    assert [f.code for f in found] == ["double_sigmoid"]
    assert "symptom:" in out and "fix: remove the sigmoid" in out and "0.313" in out
    assert lossbench.check_setup(Z.numpy(), Y.numpy(), nn.BCEWithLogitsLoss()) == []  # arrays too
    out = capsys.readouterr().out
    assert out.strip().endswith("looks right") and "loss " in out


def test_an_unexplained_error_is_a_finding_not_a_traceback():
    found = lossbench.check_setup(ZC, YC[:10], nn.CrossEntropyLoss(), verbose=False)  # batch sizes differ
    assert [f.code for f in found] == ["raises"] and "ValueError" in found[0].problem


def test_unsupported_criterion_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"^lossbench.check_setup supports .* not MSELoss\.$"):
        lossbench.check_setup(Z, Y, nn.MSELoss())


@st.composite
def correct_setups(draw):
    """A correct set-up as a model would produce it: logits of scale >= 1 around a bias, both classes present."""
    kind = draw(st.sampled_from(["bce", "bce_logits", "ce", "ce_soft", "nll", "kldiv"]))
    n, c = draw(st.integers(1, 80)), draw(st.integers(2, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    scale, bias = draw(st.floats(1, 20)), draw(st.floats(-4, 4))
    labels = torch.randint(0, c, (n,), generator=gen)
    labels[: min(n, c)] = torch.arange(min(n, c))  # every class present (one_class is a finding)
    if kind in ("bce", "bce_logits"):
        k = draw(st.integers(1, 3))
        z = torch.randn(n, k, generator=gen) * scale + bias
        t = torch.rand(n, k, generator=gen).round()
        t.view(-1)[: min(n * k, 2)] = torch.tensor([0.0, 1.0])[: min(n * k, 2)]
        if kind == "bce":  # probabilities of logits short of float32's saturation
            return torch.sigmoid(z.clamp(-15, 15)), t, nn.BCELoss(reduction=draw(st.sampled_from(["mean", "sum"])))
        pos_weight = draw(st.sampled_from([None, torch.full((k,), 3.0), torch.ones(1)]))
        return z, t, nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    z = torch.randn(n, c, generator=gen) * scale + bias
    if kind == "ce":
        if n > c and draw(st.booleans()):
            labels[-1] = -100  # some (not all) unlabelled
        weight = draw(st.sampled_from([None, torch.rand(c, generator=gen) + 0.1]))
        return z, labels, nn.CrossEntropyLoss(weight=weight, label_smoothing=draw(st.sampled_from([0.0, 0.1])))
    if kind == "ce_soft":
        return z, torch.softmax(torch.randn(n, c, generator=gen), 1), nn.CrossEntropyLoss()
    if kind == "nll":
        return torch.log_softmax(z, 1), labels, nn.NLLLoss()
    log_target = draw(st.booleans())
    q = torch.log_softmax(torch.randn(n, c, generator=gen) * scale, 1)
    return torch.log_softmax(z, 1), q if log_target else q.exp(), nn.KLDivLoss(reduction="batchmean",
                                                                              log_target=log_target)


@settings(max_examples=150, deadline=None)
@given(correct_setups())
def test_random_correct_setups_look_right(setup):
    outputs, targets, criterion = setup
    assert lossbench.check_setup(outputs, targets, criterion, verbose=False) == []


# --- the command line ---------------------------------------------------------------------------------------
def run_main(*argv: str) -> int:
    with pytest.raises(SystemExit) as e:
        doctor.main(list(argv))
    return e.value.code


def test_cli_on_pt_and_npz_files(tmp_path, capsys):
    torch.save({"outputs": torch.sigmoid(Z), "targets": Y}, tmp_path / "double.pt")
    assert run_main(str(tmp_path / "double.pt"), "--loss", "bce_logits") == 1
    assert "[double_sigmoid]" in capsys.readouterr().out
    np.savez(tmp_path / "ok.npz", outputs=ZC.numpy(), targets=YC.numpy())
    assert run_main(str(tmp_path / "ok.npz"), "--loss", "ce") == 0
    assert capsys.readouterr().out.strip().endswith("looks right")
    np.savez(tmp_path / "kd.npz", outputs=torch.log_softmax(ZC, 1).numpy(), targets=Q.numpy())
    assert run_main(str(tmp_path / "kd.npz"), "--loss", "kd") == 1  # KLDivLoss's default reduction is "mean"
    assert "[kl_mean]" in capsys.readouterr().out
    assert run_main(str(tmp_path / "kd.npz"), "--loss", "kldiv", "--reduction", "batchmean") == 0
    torch.save({"outputs": Z, "targets": Y, "pos_weight": torch.ones(3)}, tmp_path / "pw.pt")
    assert run_main(str(tmp_path / "pw.pt"), "--loss", "bce_logits") == 1
    assert "[pos_weight_shape]" in capsys.readouterr().out


@pytest.mark.parametrize("extra, argv, why", [
    ({"pos_weight": torch.ones(1)}, ["--loss", "ce"], "holds 'pos_weight', which --loss ce does not take"),
    ({}, ["--loss", "ce", "--reduction", "batchmean"], "--reduction batchmean is KLDivLoss's only"),
])
def test_options_the_loss_does_not_take_are_one_line_and_exit_2(tmp_path, capsys, extra, argv, why):
    torch.save({"outputs": ZC, "targets": YC, **extra}, tmp_path / "f.pt")
    assert run_main(str(tmp_path / "f.pt"), *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err, err


class Opaque:  # a pickled object: torch.load(weights_only=True) refuses it
    pass


@pytest.mark.parametrize("name, content, why", [
    ("missing.pt", None, "no such file"),
    ("data.csv", b"1,2", "expected a .pt or .npz file"),
    ("broken.pt", b"not a zip", "cannot be read with torch.load(weights_only=True)"),
    ("object.pt", "pickle", "cannot be read with torch.load(weights_only=True)"),
    ("list.pt", [torch.zeros(2)], "needs 'outputs' and 'targets'"),
    ("keys.pt", {"logits": torch.zeros(2)}, "found ['logits']"),
    ("string.pt", {"outputs": "x", "targets": torch.zeros(2)}, "'outputs' is a str"),
    ("broken.npz", b"PK nonsense", "cannot be read with numpy.load(allow_pickle=False)"),
    ("objects.npz", "object array", "cannot be read with numpy.load(allow_pickle=False)"),
])
def test_bad_files_are_one_line_and_exit_2(tmp_path, capsys, name, content, why):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "pickle":
        torch.save({"outputs": Opaque(), "targets": torch.zeros(2)}, path)
    elif content == "object array":
        np.savez(path, outputs=np.array([{"a": 1}], dtype=object), targets=np.zeros(2))
    elif content is not None:
        torch.save(content, path)
    assert run_main(str(path), "--loss", "bce") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lossbench.doctor: error: ") and why in err, err


def test_the_module_runs_and_help_answers_without_torch(tmp_path):
    torch.save({"outputs": ZC, "targets": YC + 1}, tmp_path / "f.pt")
    r = subprocess.run([sys.executable, "-m", "lossbench.doctor", str(tmp_path / "f.pt"), "--loss", "ce"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "[target_range]" in r.stdout and "1-based labels?" in r.stdout, r.stderr
    code = ("import sys\nfrom lossbench.tools import doctor\ntry:\n    doctor.parse_args(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'sklearn' in sys.modules, 'hydra' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "False False True"  # hydra: lossbench's config schema
