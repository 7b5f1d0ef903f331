"""The BatchNorm baselines, each on a copy of the model made for one scan (so every scan starts
from the source model: nothing carries over, and the model handed in never changes):

- ``adabn``: the segmentation path's BatchNorm statistics replaced by the scan's own (AdaBN).
- ``tent``: TENT, entropy minimisation of the prediction on the BatchNorm affine parameters with the
  scan's statistics, then those statistics for the prediction as well.

``Predictor`` itself keeps BatchNorm in eval mode with the source statistics, as the method prescribes; these
methods are the requested, reported exception.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ...shift.domain_fit import Features
from ..predictor import Predictor, probabilities_from_logits
from .base import Adaptation, Method, register
from .style import bn_inputs, crops

_PRECISION = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def rebuilt(predictor: Predictor, model: torch.nn.Module) -> Predictor:
    """A Predictor like ``predictor`` (device, precision, tiling, fast path) around another model."""
    return Predictor(model, predictor.metadata, predictor.device, tile=predictor.tile,
                     tile_overlap=predictor.tile_overlap, slice_batch=predictor.slice_batch,
                     fast=predictor.fast, compile=False, precision=_PRECISION[predictor.dtype])


def scan_copy(predictor: Predictor) -> torch.nn.Module:
    """The model, copied for one scan, frozen, in eval mode."""
    model = copy.deepcopy(predictor.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _padded(x: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % stride, 0, (-h) % stride), mode="replicate")


@torch.no_grad()
def set_scan_statistics(model: torch.nn.Module, inputs: torch.Tensor, device: torch.device, batch: int = 4) -> None:
    """Every segmentation-path BatchNorm's running statistics := those of ``inputs`` (a cumulative
    average over the batches, so a volume's fitting slices count equally)."""
    layers = bn_inputs(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: exactly the batches' mean statistics
        m.train()
    try:
        for start in range(0, len(inputs), batch):
            model(_padded(inputs[start:start + batch].to(device).float(), model.stride))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
            m.eval()


@register
class AdaBN(Method):
    name = "adabn"
    summary = "baseline: BatchNorm statistics from the scan itself (AdaBN), reset for every scan"
    changes_input = False
    training_free = True

    def adapt(self, predictor: Predictor, inputs: torch.Tensor, features: Features) -> Adaptation:
        model = scan_copy(predictor)
        set_scan_statistics(model, inputs, predictor.device)
        return Adaptation(rebuilt(predictor, model), None, {"slices": len(inputs)})


def entropy(logits: torch.Tensor, labels) -> torch.Tensor:
    """Mean predictive entropy (Bernoulli per channel for nested heads, categorical otherwise), in nats."""
    p = probabilities_from_logits(logits, labels)
    if labels.kind == "nested":
        return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)).mean()
    return -torch.special.xlogy(p, p).sum(dim=1).mean()


@register
class Tent(Method):
    name = "tent"
    settings = ("tent_steps", "tent_lr", "crop")
    summary = "baseline: TENT, entropy minimisation on the BatchNorm affine parameters, reset for every scan"
    changes_input = False
    training_free = False

    def adapt(self, predictor: Predictor, inputs: torch.Tensor, features: Features) -> Adaptation:
        model = scan_copy(predictor)
        layers = bn_inputs(model)
        params = [p for m in layers for p in (m.weight, m.bias)]
        for p in params:
            p.requires_grad_(True)
        optimiser = torch.optim.Adam(params, lr=self.config.tent_lr)
        generator = torch.Generator().manual_seed(self.config.seed)
        x = inputs.to(predictor.device).float()
        for m in layers:
            m.train()  # TENT normalises with the test batch's statistics
            m.track_running_stats = False
        losses = []
        try:
            for _ in range(max(0, self.config.tent_steps)):
                optimiser.zero_grad(set_to_none=True)
                loss = entropy(model(crops(x, self.config.crop, model.stride, generator)), predictor.labels)
                loss.backward()
                optimiser.step()
                losses.append(round(float(loss.detach()), 5))
        finally:
            for m in layers:
                m.track_running_stats = True
                m.eval()
            for p in params:
                p.requires_grad_(False)
        set_scan_statistics(model, inputs, predictor.device)  # and predict with the scan's statistics
        return Adaptation(rebuilt(predictor, model), None, {"steps": self.config.tent_steps, "entropy": losses})
