"""ONNX export of the inference network: the segmentation path the Predictor runs, nothing else.

What is exported is the folded copy (``core/inference/fastpath.FoldedSegNet``: encoder, segmentation decoder
and head with BatchNorm folded into the convolutions) in fp32 and plain NCHW, or the plain network
when the fold does not apply. The DSIR restoration decoder is training-only and stays out.

The graph takes ``(N, 3, H, W)`` float32 already normalised to [-1, 1] (``core/data/preprocess.py``),
with ``H`` and ``W`` multiples of the network's stride, and returns logits ``(N, C, H, W)``; batch,
height and width are dynamic. The sigmoid (nested labels) or softmax (exclusive), the threshold and
the label names are written into the model's ``metadata_props`` so the file describes itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.models.checkpoint import ModelMetadata
from ..core.config import NORMALIZATION
from ..core.inference.fastpath import FoldedSegNet
from ..core.method.model import RamSegNet
from ..files import atomic_write

OPSET = 17
INPUT_NAME = "raw"
OUTPUT_NAME = "logits"


def inference_network(model: RamSegNet) -> nn.Module:
    """The network the Predictor runs, on the CPU in fp32 and NCHW, in eval mode (a copy)."""
    model = model.to("cpu").float().eval()
    try:
        net: nn.Module = FoldedSegNet(model)
    except (AttributeError, TypeError, ValueError):  # a layout the fold does not know: the plain network
        net = model
    return net.to(memory_format=torch.contiguous_format).eval()


def example_input(model: RamSegNet, size: int = 64) -> torch.Tensor:
    """A (1, C, size, size) input in [-1, 1] whose sides fit the network's stride."""
    side = max(model.stride, size - size % model.stride)
    generator = torch.Generator().manual_seed(0)
    return torch.rand((1, model.config.in_channels, side, side), generator=generator) * 2 - 1


def onnx_metadata(metadata: ModelMetadata) -> dict[str, str]:
    """What a runtime needs besides the graph: input range, output activation, labels, threshold."""
    labels = metadata.config.labels
    return {
        "producer": "napari-ramseg",
        "input": "N x 3 x H x W float32, H and W multiples of the stride, normalised as 'normalization' says",
        "normalization": json.dumps(NORMALIZATION),
        "stride": str(2 ** (metadata.config.model.depth - 1)),
        "output": "logits; apply "
                  + ("a sigmoid per channel" if labels.kind == "nested" else "a softmax over channels"),
        "label_kind": labels.kind,
        "label_names": json.dumps(list(labels.names)),
        "threshold": str(metadata.config.threshold),
        "source_domains": json.dumps(list(metadata.domains)),
    }


def export_onnx(model: RamSegNet, metadata: ModelMetadata, path: str | Path, opset: int = OPSET) -> Path:
    """Write the inference network as ONNX (see the module docstring); returns the path."""
    import onnx

    path = Path(path)
    net = inference_network(model)
    x = example_input(model)
    dynamic = {0: "batch", 2: "y", 3: "x"}

    def write(tmp: Path) -> None:
        # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles this network
        torch.onnx.export(net, (x,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic}, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, onnx_metadata(metadata))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    atomic_write(path, write, suffix=".onnx")
    return path


def run_onnx(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Logits from an exported file with onnxruntime on the CPU (no torch involved)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
