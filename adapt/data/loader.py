"""On-device batches: :class:`DeviceLoader` augments and normalizes whole mini-batches on the training device."""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from adapt.data.base import CIFAR_MEAN, CIFAR_STD, CROP_PADDING, DeviceLike, ImageDataset, NORMALIZATION, check_int

# --------------------------------------------------------------------------- augmentation


def _stats_tensor(name: str, values, channels: int, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(values, torch.Tensor) and values.shape == (1, channels, 1, 1) and values.dtype == dtype \
            and values.device == torch.device(device):
        return values  # already prepared (DeviceLoader caches its statistics)
    t = torch.as_tensor(values, dtype=dtype, device=device).flatten()
    if t.numel() != channels:
        raise ValueError(f"{name} needs {channels} values (one per channel), got {t.numel()}: {values!r}")
    return t.view(1, channels, 1, 1)


def normalize(images: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """``(images / 255 - mean) / std`` in float32, the order torchvision's
    ``ToTensor`` + ``Normalize`` use (so the result is bit-identical to theirs)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 (B, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    c = images.shape[1]
    m = _stats_tensor("mean", mean, c, images.device)
    s = _stats_tensor("std", std, c, images.device)
    return images.to(torch.float32).div_(255).sub_(m).div_(s)


def augment_batch(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = CROP_PADDING
) -> torch.Tensor:
    """RandomCrop(H, padding) with zero padding, then horizontal flip, for a whole batch.

    ``offsets`` ``(B, 2)``: the (top, left) corner of each crop in the padded image,
    in ``[0, 2*padding]``; ``flips`` ``(B,)`` bool.  Output pixel ``(i, j)`` of sample
    ``b`` is ``padded[b, :, top+i, left+j]``, or ``padded[b, :, top+i, left+W-1-j]``
    when flipped.  One gather, no loop over samples; works for any dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if offsets.shape != (b, 2) or flips.shape != (b,):
        raise ValueError(
            f"offsets must be ({b}, 2) and flips ({b},), got {tuple(offsets.shape)} and {tuple(flips.shape)}"
        )
    p = padding
    hp, wp = h + 2 * p, w + 2 * p
    dev = images.device
    offsets = offsets.to(device=dev, dtype=torch.int64)
    flips = flips.to(device=dev, dtype=torch.bool)
    padded = F.pad(images, (p, p, p, p)) if p else images
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = offsets[:, :1] + ar_h                                              # (B, H)
    cols = offsets[:, 1:] + torch.where(flips[:, None], (w - 1) - ar_w, ar_w)  # (B, W)
    lin = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, lin).view(b, c, h, w)


def mix_seed(seed: int, stream: int) -> int:
    """A well-mixed 63-bit seed that is a pure function of (seed, stream)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class EpochPlan(NamedTuple):
    """The randomness of one epoch (CPU tensors): the order in which examples are
    visited, and per position the crop corner ``(top, left)`` and flip flag."""

    order: torch.Tensor
    offsets: Optional[torch.Tensor]
    flips: Optional[torch.Tensor]


class DeviceLoader:
    """Mini-batches of an :class:`ImageDataset` that lives on ``device``.

    Yields ``(x, y)``: ``x`` float32 ``(B, C, H, W)`` normalized with ``mean``/``std`` (default:
    :data:`NORMALIZATION` of the data set's name -- MNIST's for the 1-channel sets -- else CIFAR's)
    (after RandomCrop(padding)+flip when ``augment``), ``y`` int64 ``(B,)``, both on
    the device.  The visiting order and the augmentation of an epoch are drawn on the
    CPU from a generator seeded with a pure function of ``(seed, epoch)``
    (:meth:`plan`), so they are identical on every device and independent of what
    ran before: a fresh loader after :meth:`set_epoch` (e) reproduces epoch ``e``
    exactly, which is what resuming a run relies on.

    Each ``iter()`` uses the current epoch and then advances it by one, so a loop
    that never calls :meth:`set_epoch` still sees a new order every epoch; a loop
    that calls ``set_epoch(e)`` before each epoch gets epoch ``e`` whatever happened
    before.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: Optional[DeviceLike] = None,
        mean=None,
        std=None,
        padding: int = CROP_PADDING,
    ):
        if not isinstance(dataset, ImageDataset):
            raise ValueError(f"dataset must be an ImageDataset, got {type(dataset).__name__}")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.padding = check_int("padding", padding, 0)
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.drop_last = bool(drop_last)
        self.dataset = dataset if device is None else dataset.to(device)
        self.device = self.dataset.device
        if self.drop_last and len(self.dataset) < self.batch_size:
            raise ValueError(
                f"drop_last with batch_size {self.batch_size} > {len(self.dataset)} examples leaves no batch"
            )
        c = self.dataset.images.shape[1]
        default_mean, default_std = NORMALIZATION.get(self.dataset.name, (CIFAR_MEAN, CIFAR_STD))
        mean = default_mean if mean is None else mean
        std = default_std if std is None else std
        self._mean = _stats_tensor("mean", mean, c, self.device)
        self._std = _stats_tensor("std", std, c, self.device)
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next ``iter()`` will produce."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = check_int("epoch", epoch, 0)

    def plan(self, epoch: int) -> EpochPlan:
        """Order, crop corners and flips of ``epoch`` (pure function of seed and epoch)."""
        epoch = check_int("epoch", epoch, 0)
        n = len(self.dataset)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if not self.augment:
            return EpochPlan(order, None, None)
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g)
        flips = torch.randint(0, 2, (n,), generator=g).bool()
        return EpochPlan(order, offsets, flips)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        return self._batches(self.plan(epoch))

    def _batches(self, plan: EpochPlan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels, bs = self.dataset.images, self.dataset.labels, self.batch_size
        order = plan.order.to(self.device) if self.shuffle else None
        if self.augment:
            offsets, flips = plan.offsets.to(self.device), plan.flips.to(self.device)
        for k in range(len(self)):
            lo, hi = k * bs, min((k + 1) * bs, len(self.dataset))
            if order is None:
                x, y = images[lo:hi], labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = images[idx], labels[idx]
            if self.augment:
                x = augment_batch(x, offsets[lo:hi], flips[lo:hi], self.padding)
            yield normalize(x, self._mean, self._std), y
