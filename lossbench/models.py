"""Model bodies and the output layer. Every model returns raw logits z of shape (N, K).

K, the number of outputs, is fixed by the head (heads.n_outputs): a binary sigmoid head has 1 unit, a
softmax head 2 units for a binary task; with C classes both have C units (sigmoid = one-vs-rest). The
head's activation (Sigmoid, LogSoftmax, ...) is applied by the loss pipeline in lossbench/losses/, exactly as a
user's model would apply it, so that the monitors can see both z and the activation's output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn


def n_outputs(head: str, n_classes: int, multilabel: bool = False) -> int:
    """One output per class, except a binary sigmoid head (1 unit); a multi-label task has one per label."""
    return 1 if head == "sigmoid" and n_classes == 2 and not multilabel else n_classes


class CosineLinear(nn.Module):
    """Normalised output layer (``model.cosine_head=true``): z_c = <h / |h|, W_c / |W_c|>, a cosine in [-1, 1],
    no bias. The layer of the LDAM-DRW reference code (``NormedLinear``, used with loss=ldam, whose scale s
    restores the logit range); weights initialised as nn.Linear's (only their direction matters). Not a subclass
    of nn.Linear, so that code special-casing nn.Linear (the stacked forward, lossbench/stack.py) cannot take it
    for a plain linear layer.

    The logits cannot overflow, whatever the weights: under an exploding learning rate the weights grow instead,
    until |h|'s norm overflows to inf in float32, F.normalize returns 0, the logits collapse to 0 and the gradient
    vanishes. Such a run ends 'completed' at chance level, not 'diverged' (no value is NaN or inf)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(in_features, out_features, bias=False).weight.detach())
        self.bias = None  # no output bias (model.head_bias is refused with this head)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(h, dim=1), F.normalize(self.weight, dim=1))


def build(mc: DictConfig, input_shape: tuple[int, ...], n_out: int) -> nn.Module:
    n_in = math.prod(input_shape)
    out_layer = CosineLinear if mc.get("cosine_head", False) else nn.Linear
    if mc.name == "linear":
        model = nn.Sequential(nn.Flatten(), out_layer(n_in, n_out))
    elif mc.name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for h in mc.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        model = nn.Sequential(*layers, out_layer(width, n_out))
    else:  # cnn, on (N, 1, 28, 28) images
        c1, c2 = mc.channels
        side = input_shape[-1] // 4
        model = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * side * side, mc.hidden), nn.ReLU(),
            out_layer(mc.hidden, n_out),
        )
    if mc.init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(mc.init_scale)
    return model


def output_layer(model: nn.Module) -> nn.Linear | CosineLinear:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, CosineLinear))][-1]


def init_head_bias(model: nn.Module, head_bias, head: str, class_counts: torch.Tensor,
                   n_labelled: torch.Tensor | None = None) -> None:
    """Set the output bias: a number, or `prior` = the training prior (Lin et al. 2017, focal loss).

    prior: sigmoid outputs get log(pi/(1-pi)) (pi = positive rate of each output), softmax outputs get
    log(pi_c), so that the initial predicted probabilities equal the class frequencies. pi = class_counts /
    n_labelled (default: their sum; a multi-label task passes the labelled entries per label).
    """
    if head_bias is None:
        return
    bias = output_layer(model).bias
    with torch.no_grad():
        if head_bias != "prior":
            bias.fill_(float(head_bias))
            return
        n = class_counts.sum() if n_labelled is None else n_labelled
        pi = (class_counts.double() / n).clamp(1e-6, 1 - 1e-6)
        if head == "softmax":
            bias.copy_(pi.log())
        elif bias.numel() == 1:
            bias.fill_(float(torch.log(pi[1] / (1 - pi[1]))))
        else:
            bias.copy_(torch.log(pi / (1 - pi)))
