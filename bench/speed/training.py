"""Training speed (bench/speed/benchmark.py): one RAM-DSIR step of the Trainer at batch 8 against a plain eager
PyTorch step at batch 16 (the same number of images through the network), and what drawing a batch costs."""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch

from napari_ramseg.core.config import ModelConfig, PreprocessConfig, TrainConfig
from napari_ramseg.core.labels import VESSELS
from napari_ramseg.core.method.model import RamSegNet

from bench.speed.inputs import SIZES, Sizes, train_samples
from bench.speed.timing import interleaved, timed


def bench_train(quick: bool, sizes: Sizes = SIZES["full"]) -> dict[str, Any]:
    from napari_ramseg.core.inference.fastpath import use_channels_last
    from napari_ramseg.core.method.losses import SegmentationLoss
    from napari_ramseg.core.method.ram import amplitude_mixup, sample_lambda
    from napari_ramseg.core.method.sampling import SourcePool
    from napari_ramseg.core.training.trainer import Trainer

    side = sizes.train_side
    samples = train_samples(size=side)
    config = TrainConfig(labels=VESSELS, model=ModelConfig(), preprocess=PreprocessConfig(size=side), batch=8,
                         iterations=10**6, val_every=10**6, device="cpu", seed=0)
    trainer = Trainer(config, ["A", "B"], samples)  # as the engine trains: channels_last, RAM + DSIR + consistency
    plain_loss = SegmentationLoss(VESSELS)

    def plain(channels_last: bool) -> Callable[[], Any]:
        """The plain baseline step: eager PyTorch, one segmentation loss, 16 images."""
        torch.manual_seed(0)
        net = RamSegNet(ModelConfig(), VESSELS, num_domains=2).train()
        if channels_last:
            use_channels_last(net)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        pool = SourcePool(samples, ["A", "B"], config.preprocess, seed=0)

        def step(batch=16):
            images, masks, _ = pool.draw_batch(batch)
            opt.zero_grad(set_to_none=True)
            loss = plain_loss(net(images), masks)
            loss.backward()
            opt.step()
            return float(loss.detach())
        return step

    def draw(tr):
        images, masks, domains = tr.pool.draw_batch(config.batch)
        partners = tr.pool.draw_partners(domains)
        lam = sample_lambda(len(images), config.method.lam_mode, tr.lambda_generator)
        return images, masks, domains, amplitude_mixup(images, partners, lam, config.method.window_ratio)

    # plain_b16 (NCHW) is the plain-PyTorch baseline; plain_b16_channels_last isolates what the method
    # itself adds at equal memory layout
    fns: dict[str, Callable[[], Any]] = {"plain_b16": plain(False), "ramdsir_b8": trainer.step}
    if not quick:
        fns["plain_b16_channels_last"] = plain(True)
    res = interleaved(fns, 2 if quick else 5, warmup=1)
    data = [timed(lambda: draw(trainer)) for _ in range(5)]
    trainer_precision = "fp32" if trainer.dtype is None else str(trainer.dtype).removeprefix("torch.")
    out: dict[str, Any] = {
        "config": f"paper U-Net (base 16, depth 5), {side}x{side} crops, vessels (1 sigmoid head), 2 synthetic domains, "
                  f"RAM + DSIR + consistency; the Trainer runs channels_last in {trainer_precision} "
                  f"(precision auto on this CPU), the plain steps in fp32",
        "trainer_precision": trainer_precision,
        "steps": res,
        "data_draw_s_median": round(statistics.median(data), 4),
        "data_share_of_step": round(statistics.median(data) / res["ramdsir_b8"]["median_s"], 4),
        # training images per second; RAM-DSIR puts each through the network twice (original + mixed)
        "images_per_s": {k: round((16 if k.startswith("plain") else 8) / v["median_s"], 2) for k, v in res.items()},
        "network_images_per_s": {k: round(16 / v["median_s"], 2) for k, v in res.items()},
    }
    return out
