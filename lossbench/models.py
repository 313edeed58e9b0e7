"""Model bodies and the output layer. Every model returns raw logits z of shape (N, K).

K, the number of outputs, is fixed by the head (lossbench.losses.registry.n_outputs): a binary sigmoid head has 1 unit, a
softmax head 2 units for a binary task; with C classes both have C units (sigmoid = one-vs-rest). The
head's activation (Sigmoid, LogSoftmax, ...) is applied by the loss pipeline in lossbench/losses/, exactly as a
user's model would apply it, so that the monitors can see both z and the activation's output.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn


class CosineLinear(nn.Module):
    """Normalised output layer (``model.cosine_head=true``): z_c = <h / |h|, W_c / |W_c|>, a cosine in [-1, 1],
    no bias. The layer of the LDAM-DRW reference code (``NormedLinear``, used with loss=ldam, whose scale s
    restores the logit range); weights initialised as nn.Linear's (only their direction matters). Not a subclass
    of nn.Linear, so that code special-casing nn.Linear (the stacked forward, lossbench/engine/stack.py) cannot take it
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


class Dropout(nn.Dropout):
    """nn.Dropout whose masks are drawn from ``generator`` (the run's own, :func:`use_generator`) when it is set:
    a run's masks then depend on its seed alone, are restored with its checkpoint, and are the same whether it
    trains alone or in a stack (lossbench/engine/stack.py draws each member's masks from that member's generator).
    Without a generator (a model built outside a run) it is nn.Dropout. Identity in eval mode."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.generator is None:
            return super().forward(x)
        return x * dropout_mask(x.shape, self.p, x.device, x.dtype, self.generator)


def dropout_mask(shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype,
                 generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout's multiplier: 0 with probability p, else 1 / (1 - p)."""
    keep = torch.empty(shape, device=device, dtype=dtype).bernoulli_(1 - p, generator=generator)
    return keep.div_(1 - p)


def use_generator(model: nn.Module, generator: torch.Generator) -> None:
    """Draw model's dropout masks from generator (a run's own, which also orders its data)."""
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


def _sequential(layers: list[nn.Module], dropout: float, after: tuple[int, ...]) -> nn.Sequential:
    """nn.Sequential of layers, with Dropout(dropout) after the layers at the indices `after` when dropout > 0.
    The other layers keep the names they have without dropout ('0', '1', ...; a dropout layer after layer i is
    'dropout<i>'), so that a checkpoint's weights load into the model with or without dropout (model.init_from,
    a teacher)."""
    named: list[tuple[str, nn.Module]] = []
    for i, layer in enumerate(layers):
        named.append((str(i), layer))
        if dropout > 0 and i in after:
            named.append((f"dropout{i}", Dropout(dropout)))
    return nn.Sequential(OrderedDict(named))


def build(mc: DictConfig, input_shape: tuple[int, ...], n_out: int) -> nn.Module:
    n_in = math.prod(input_shape)
    out_layer = CosineLinear if mc.get("cosine_head", False) else nn.Linear
    dropout = float(mc.get("dropout") or 0.0)  # after each hidden layer's ReLU (Hinton et al. 2012: 0.5)
    if mc.name == "linear":
        model = nn.Sequential(nn.Flatten(), out_layer(n_in, n_out))
    elif mc.name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for h in mc.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(out_layer(width, n_out))
        model = _sequential(layers, dropout, after=tuple(range(2, len(layers) - 1, 2)))
    else:  # cnn, on (N, 1, 28, 28) images; dropout on the fully connected hidden layer (not the conv maps)
        c1, c2 = mc.channels
        side = input_shape[-1] // 4
        model = _sequential([
            nn.Conv2d(input_shape[0], c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * side * side, mc.hidden), nn.ReLU(),
            out_layer(mc.hidden, n_out),
        ], dropout, after=(8,))
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
