"""2-D ResNet feature extractor (basic blocks, depths 10/18/34) and loading of local torchvision-style weights.

:class:`ResNetFeatures` is the classic ResNet (He et al. 2016) cut after ``layer4`` — no average pool, no ``fc``:
a 7×7 stride-2 stem convolution, BatchNorm, ReLU and 3×3 stride-2 max pool, then four stages of basic blocks
whose first block (stages 2–4) strides by 2 with a 1×1-convolution + BatchNorm shortcut ("type B", no bias). Its
attribute names are torchvision's, so its state-dict keys are exactly torchvision's (``conv1.weight``, ``bn1.*``,
``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, …) and a torchvision ResNet state dict loads by name
(:func:`load_pretrained_backbone`). Nothing is ever downloaded.

Why our own ~50 lines rather than MONAI's ``monai.networks.nets.ResNet(block="basic", spatial_dims=2,
conv1_t_stride=2, shortcut_type="B", bias_downsample=False, feed_forward=False)``, which is the same network:
any ``import monai…`` runs ``monai/__init__`` and loads all of MONAI (apps, data, transforms, and through them
mlflow, nibabel, scipy): 7–10 s on top of torch's 2 s on the project's 2-core machine, for every process that
builds this model (``train``, ``predict`` on one image, each test file) — and nothing else in medtrain imports
MONAI at run time (``nn/diffusion.py`` made the same choice). The tests load MONAI's ResNet weights into this
module by name, strictly, and check that both give the same pooled features, so the two are the same network.

Shapes, for an image ``[B, C, H, W]``: every stride-2 step (stem convolution, max pool, first block of stages
2–4; all padded so that a side ``n`` becomes ``⌈n / 2⌉``) halves with rounding up, so the feature map is
``[B, 8·base_width, ⌈H/32⌉, ⌈W/32⌉]`` — ``[B, 512, 7, 7]`` for ResNet-34 at 224×224 (:func:`feature_grid`).
``last_stride=1`` keeps ``layer4`` at ``layer3``'s resolution (overall stride 16, ``[B, 8·base_width, ⌈H/16⌉,
⌈W/16⌉]``): a finer map for small images (64×64 → 4×4 instead of 2×2) with the same weights and key names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from medtrain.errors import DataError

__all__ = [
    "RESNET_LAYERS",
    "BasicBlock",
    "ResNetFeatures",
    "adapt_input_conv",
    "feature_grid",
    "load_pretrained_backbone",
]

log = logging.getLogger(__name__)

RESNET_LAYERS: dict[int, tuple[int, int, int, int]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Basic blocks per stage for each supported depth (He et al. 2016, Table 1; ResNet-10 as in MONAI/MedicalNet)."""

_STRIDE_2_STEPS = 4  # stem conv, max pool, first blocks of layer2 and layer3; layer4 strides by last_stride


class BasicBlock(nn.Module):
    """ResNet basic block: ``ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x))``, 3×3 convolutions.

    ``conv1`` strides by ``stride``; ``shortcut`` is the identity, or ``downsample`` = 1×1 convolution (stride
    ``stride``, no bias) + BatchNorm when the stride or the width changes. Names as torchvision's ``BasicBlock``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W]`` → ``[B, out, ⌈H/stride⌉, ⌈W/stride⌉]``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetFeatures(nn.Module):
    """2-D ResNet (basic blocks) feature extractor: image ``[B, C, H, W]`` → ``[B, 8·base_width, ⌈H/s⌉, ⌈W/s⌉]``
    with ``s = 16 · last_stride`` (32 by default).

    The stem (``conv1`` 7×7 stride 2 · ``bn1`` · ReLU · 3×3 stride-2 ``maxpool``) and four stages ``layer1..layer4``
    of ``RESNET_LAYERS[depth]`` :class:`BasicBlock` s with widths ``base_width·(1, 2, 4, 8)``, stages 2–3 starting
    with stride 2 and stage 4 with ``last_stride`` (2, the classic ResNet, or 1; the parameters are the same either
    way, so weights load into both); no pooling, no ``fc``. Initialisation as torchvision/MONAI: Kaiming-normal
    convolutions (``fan_out``, ReLU gain), BatchNorm weight 1 and bias 0. ``out_channels`` is ``8·base_width``.
    """

    out_channels: int

    def __init__(self, depth: int = 34, in_channels: int = 1, base_width: int = 64, last_stride: int = 2) -> None:
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if in_channels < 1 or base_width < 1:
            raise ValueError(f"in_channels and base_width must be positive, got {in_channels}, {base_width}")
        widths = [base_width, 2 * base_width, 4 * base_width, 8 * base_width]
        self.depth = depth
        self.in_channels = in_channels
        self.out_channels = widths[-1]
        self.last_stride = last_stride
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        previous = base_width
        for index, (width, blocks) in enumerate(zip(widths, RESNET_LAYERS[depth], strict=True)):
            stride = (1, 2, 2, last_stride)[index]
            layers = [BasicBlock(previous, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W]`` → ``[B, out_channels, ⌈H/s⌉, ⌈W/s⌉]``, ``s = 16 · last_stride``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def feature_grid(image_size: int, last_stride: int = 2) -> int:
    """Side of :class:`ResNetFeatures`' feature map for a square image: ``⌈image_size / (16 · last_stride)⌉``
    (224 → 7 and 64 → 2 with ``last_stride=2``; 64 → 4 with ``last_stride=1``).

    Four stride-2 steps and one stride-``last_stride`` step each map ``n`` to ``⌈n / stride⌉``; nested ceilings of
    divisions equal the ceiling of the whole division.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    side = int(image_size)
    for _ in range(_STRIDE_2_STEPS):
        side = math.ceil(side / 2)
    return math.ceil(side / last_stride)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution weight ``[out, c, k, k]`` to ``in_channels`` input channels.

    - ``in_channels == c``: unchanged.
    - ``in_channels == 1``: ``w'[:, 0] = Σ_c w[:, c]`` — a grey image ``g`` then gives exactly the response the
      original filters give to ``g`` replicated on all ``c`` channels (``conv(g, Σ_c w_c) = Σ_c conv(g, w_c)``).
    - otherwise: the ``c`` channels are tiled to ``in_channels`` and scaled, ``w'[:, j] = w[:, j mod c] · c /
      in_channels``, which keeps the response to a constant image the same.
    """
    channels = weight.shape[1]
    if in_channels == channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / channels)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (channels / in_channels)


def load_pretrained_backbone(module: ResNetFeatures, path: Path) -> list[str]:
    """Load a local torchvision-style ResNet state dict into ``module`` and return the keys it ignored (sorted).

    ``path`` is ``.safetensors`` (read with safetensors) or ``.pt``/``.pth`` (``torch.load(weights_only=True)``,
    a flat mapping of names to tensors). Keys are torchvision's (``conv1.weight``, ``bn1.*``,
    ``layerS.B.conv1.weight``, ``layerS.B.downsample.0.weight``, …). ``fc.*`` and any other key the module does
    not have are ignored (returned; non-``fc`` ones are also logged as a warning). A ``conv1.weight`` with another
    number of input channels is adapted with :func:`adapt_input_conv` (1 channel: sum over the input channels).
    Every other key of the module must be present with the module's shape — except BatchNorm
    ``num_batches_tracked`` counters, which older torchvision files lack and which then keep their value.
    Tensors are cast to the module's dtypes. Raises :class:`~medtrain.errors.DataError` naming the file and key
    when the file is missing or unreadable, a key is missing or a shape differs; the module is unchanged then.
    """
    path = Path(path)
    state = _read_state_dict(path)
    expected = module.state_dict()
    if "conv1.weight" in state and state["conv1.weight"].dim() == 4:
        state["conv1.weight"] = adapt_input_conv(state["conv1.weight"], module.in_channels)
    ignored = sorted(set(state) - set(expected))
    loaded: dict[str, torch.Tensor] = {}
    for key, target in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                loaded[key] = target
                continue
            raise DataError(f"pretrained weights {path} have no key {key!r} (expected a torchvision-style ResNet)")
        tensor = state[key]
        if tensor.shape != target.shape:
            raise DataError(
                f"pretrained weights {path}: key {key!r} has shape {tuple(tensor.shape)}, "
                f"the backbone expects {tuple(target.shape)}"
            )
        loaded[key] = tensor.to(dtype=target.dtype)
    module.load_state_dict(loaded, strict=True)
    unknown = [key for key in ignored if not key.startswith("fc.")]
    if unknown:
        log.warning("pretrained weights %s: ignored %d keys the backbone lacks: %s", path, len(unknown), unknown[:5])
    return ignored


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a flat ``name → tensor`` mapping from ``.safetensors`` or ``.pt``/``.pth`` without pickle."""
    if not path.is_file():
        raise DataError(f"pretrained weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in {".safetensors", ".pt", ".pth"}:
        raise DataError(f"pretrained weights {path}: expected a .safetensors, .pt or .pth file")
    try:
        if suffix == ".safetensors":
            state: object = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt file, or a .pt holding more than tensors (weights_only refuses it)
        raise DataError(f"cannot read pretrained weights {path}: {error}") from error
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise DataError(f"pretrained weights {path}: expected a flat mapping of parameter names to tensors")
    return dict(state)
