"""volume-seg inference speed: medtrain's sliding window against ``monai.inferers.sliding_window_inference``,
alternated in one process and printed as a ratio.

Both arms run the same small 3-D U-Net-like network (two resolutions, InstanceNorm + LeakyReLU, a skip
connection; defined here) on the same random volume ``[1, *--volume]`` with the same patch (``--patch``), overlap
0.5, Gaussian weighting (σ = patch/8: MONAI ``mode="gaussian", sigma_scale=0.125``), window batch
(``--batch-size``), no mirroring, under ``torch.inference_mode``; the window count per axis is the same
(ceil((I − P) / (P/2)) + 1 in both, only the positions of the windows differ), so the network work is equal:

- *medtrain*: ``medtrain.nn.sliding_window.sliding_window_inference`` (logits per head, the net wrapped to return
  ``{"seg": logits}``);
- *monai*: ``monai.inferers.sliding_window_inference``.

Prints voxels/s (thousands) of both per round (order alternating), the medians and the ratio medtrain/monai
(goal ≥ 1.0). Usage: ``python benchmarks/sliding_window.py [--rounds 4] [--volume 64,96,96] [--patch 32,48,48]
[--batch-size 4] [--threads 1] [--device cpu] [--quick]``. No threshold; exits 0.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from _ab_timing import print_ratio_table
from medtrain.nn.sliding_window import sliding_window_inference

SEED = 0


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01)
    )


class SmallUNet(nn.Module):
    """Two resolutions: 16 features, then 32 at half resolution, a transposed-conv up-path and a 1×1 head."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2) -> None:
        super().__init__()
        self.enc = nn.Sequential(block(in_channels, 16), block(16, 16))
        self.down = nn.Sequential(block(16, 32, stride=2), block(32, 32))
        self.up = nn.ConvTranspose3d(32, 16, 2, stride=2)
        self.dec = block(32, 16)
        self.head = nn.Conv3d(16, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc(x)
        return self.head(self.dec(torch.cat([skip, self.up(self.down(skip))], dim=1)))


def parse_size(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--volume", type=parse_size, default=(64, 96, 96))
    parser.add_argument("--patch", type=parse_size, default=(32, 48, 48))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="volume 40,64,64, patch 32,32,32, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.volume, args.patch, args.rounds = (40, 64, 64), (32, 32, 32), 2
    from monai.inferers import sliding_window_inference as monai_sliding_window

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    device = torch.device(args.device)
    model = SmallUNet().to(device).eval()
    image = torch.randn(1, *args.volume, device=device)
    voxels = image[0].numel()

    def ours() -> torch.Tensor:
        return sliding_window_inference(
            lambda x: {"seg": model(x)}, image, args.patch, overlap=0.5, batch_size=args.batch_size
        )["seg"]

    def monai() -> torch.Tensor:
        with torch.inference_mode():
            return monai_sliding_window(
                image[None], args.patch, args.batch_size, model, overlap=0.5, mode="gaussian", sigma_scale=0.125
            )[0]

    arms = {"medtrain": ours, "monai": monai}
    difference = (ours() - monai()).abs().mean() / monai().abs().mean()  # warm-up and a sanity check
    print(
        f"volume {args.volume}, patch {args.patch}, overlap 0.5, gaussian, batch {args.batch_size}, "
        f"{args.threads} thread(s), {device}; mean |medtrain − monai| / mean |monai| = {difference:.3f} "
        "(window positions differ: nnU-Net spreads them evenly, MONAI clamps the last)"
    )
    rounds = []
    for index in range(args.rounds):
        order = ("medtrain", "monai") if index % 2 == 0 else ("monai", "medtrain")
        rates = {}
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            arms[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name] = voxels / (time.perf_counter() - started) / 1e3
        rounds.append(rates)
    print_ratio_table("sliding-window inference: thousand voxels/s", rounds, "medtrain", "monai", unit="kvox/s")


if __name__ == "__main__":
    main()
