"""Torch views of a :class:`~msnas_graph.data.SegmentationDataset`: datasets, samplers, loaders.

Everything random here is a pure function of ``(seed, epoch, case index)``:

- the shuffle order of an epoch is drawn from a generator seeded with ``(seed, epoch)``
  (:class:`EpochSampler`, or :class:`torch.utils.data.DistributedSampler` with ``seed`` and
  ``set_epoch`` under DDP);
- the augmentation of a case is drawn from ``numpy.random.default_rng((seed, epoch, index))``.

So a run resumed at epoch ``e`` sees exactly the batches an uninterrupted run would have seen,
whatever the number of loader workers, with no generator state to save. The sampler yields
``(index, epoch)`` pairs, which is how the epoch reaches datasets copied into worker processes.

>>> from msnas_graph.data import load_dataset
>>> ds = SegmentationTorchDataset(load_dataset("phantom:4"), [0, 1, 2], size=32, augment=True)
>>> image, mask = ds[(0, 0)]
>>> tuple(image.shape), tuple(mask.shape), image.dtype, mask.dtype
((1, 32, 32), (32, 32), torch.float32, torch.int64)
>>> torch.equal(ds[(0, 0)][0], image), torch.equal(ds[(0, 1)][0], image)
(True, False)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from msnas_graph.data import (
    SegmentationDataset,
    augment,
    load_dataset,
    load_folds,
    preprocess,
    train_val_test_split,
)
from msnas_graph.errors import DataError
from msnas_graph.limits import case_bytes, check_fits

__all__ = [
    "EpochSampler",
    "SegmentationTorchDataset",
    "load_cases",
    "make_loader",
    "seed_worker",
    "split_by_group",
    "split_cases",
]


class SegmentationTorchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Cases ``indices`` of ``dataset``, preprocessed to ``size`` (and augmented if asked).

    Items are addressed by ``(position, epoch)`` (``position`` in ``0..len-1``); a plain int
    means epoch 0. Returns ``(image float32 (C, S, S), mask int64 (S, S))``. Preprocessed
    arrays are cached in memory (``cache=True``), so only augmentation runs per step.
    Unlabelled cases get an all-``ignore_index`` mask (``-100``), which the losses skip.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        indices: Sequence[int],
        size: int,
        *,
        augment: bool = False,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.size = int(size)
        self.augment = augment
        self.seed = int(seed)
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if cache:  # every case is kept preprocessed
            n = len(self.indices)
            per_case = case_bytes(self.size**2, dataset.in_channels)
            check_fits(n * per_case, f"caching {n} cases at {self.size}x{self.size} for training")

    def __len__(self) -> int:
        return len(self.indices)

    def _arrays(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(pos)
        if hit is not None:
            return hit
        case = self.dataset[self.indices[pos]]
        image, mask = preprocess(case, self.size)
        if mask is None:
            mask = np.full(image.shape[1:], -100, dtype=np.int64)
        if self.cache:
            self._cache[pos] = (image, mask)
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        pos, epoch = (key, 0) if isinstance(key, int) else (int(key[0]), int(key[1]))
        image, mask = self._arrays(pos)
        if self.augment:
            rng = np.random.default_rng((self.seed, epoch, self.indices[pos]))
            image, aug_mask = augment(image, mask, rng)
            mask = mask if aug_mask is None else aug_mask
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
        )


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)``: a permutation drawn from ``(seed, epoch)``, or ``0..n-1``.

    Wraps a :class:`~torch.utils.data.DistributedSampler` when ``distributed`` is given as
    ``(rank, world_size)``: each rank then gets its own padded share of that epoch's
    permutation (the same on every rank).

    >>> s = EpochSampler(5, shuffle=True, seed=1)
    >>> s.set_epoch(3)
    >>> first = list(s)
    >>> s.set_epoch(3); first == list(s)
    True
    >>> sorted(i for i, _ in first), {e for _, e in first}
    ([0, 1, 2, 3, 4], {3})
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int = 0,
        distributed: tuple[int, int] | None = None,
    ) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self._dist: DistributedSampler[Any] | None = None
        if distributed is not None:
            rank, world = distributed
            self._dist = DistributedSampler(
                range(n),  # type: ignore[arg-type]
                num_replicas=world,
                rank=rank,
                shuffle=shuffle,
                seed=self.seed,
                drop_last=False,
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)
        if self._dist is not None:
            self._dist.set_epoch(self.epoch)

    def _order(self) -> list[int]:
        if self._dist is not None:
            return list(self._dist)
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self._order()])

    def __len__(self) -> int:
        return len(self._dist) if self._dist is not None else self.n


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy's and Python's global generators from torch's seed.

    Augmentation does not use global generators (see the module doc); this only makes any
    third-party code that does deterministic too.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: SegmentationTorchDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    distributed: tuple[int, int] | None = None,
    drop_last: bool | None = None,
    pin_memory: bool = False,
) -> tuple[DataLoader[Any], EpochSampler]:
    """A loader over ``dataset`` and its :class:`EpochSampler` (call ``set_epoch`` each epoch).

    ``batch_size`` is per process under DDP. ``drop_last=None`` drops the last incomplete
    batch when training (``shuffle=True``) and a process has at least one full batch, so that
    BatchNorm never sees a lone sample.
    """
    if len(dataset) == 0:
        raise DataError("a data split is empty: use more cases or a smaller validation fraction")
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be at least 1")
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, distributed=distributed)
    if drop_last is None:
        drop_last = shuffle and len(sampler) > batch_size
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )
    return loader, sampler


def split_by_group(
    indices: Sequence[int], groups: Sequence[str], seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split case ``indices`` in two halves that share no group (DARTS' weight/arch halves).

    Groups are drawn in an order seeded by ``seed`` into the first half until it holds at least
    half of the cases; both halves are sorted. ``groups`` is indexed by case index.

    >>> split_by_group([0, 1, 2, 3], ["a", "b", "c", "d"], seed=0)
    ([0, 2], [1, 3])
    """
    idx = [int(i) for i in indices]
    names = sorted({groups[i] for i in idx})
    if len(names) < 2:
        raise DataError(
            f"the search's training split holds {len(names)} group(s); it is halved by group "
            "for weight and architecture steps, so it needs at least 2: use more cases"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    first: set[str] = set()
    count = 0
    members = {g: sum(1 for i in idx if groups[i] == g) for g in names}
    for j in order[:-1]:  # the last group always goes to the second half
        if count * 2 >= len(idx):
            break
        first.add(names[j])
        count += members[names[j]]
    a = sorted(i for i in idx if groups[i] in first)
    b = sorted(i for i in idx if groups[i] not in first)
    return a, b


def load_cases(source: str, *, labelled: bool = False, **kw: Any) -> SegmentationDataset:
    """:func:`~msnas_graph.data.load_dataset`, refusing an empty dataset and, with
    ``labelled``, a case without a mask (searching and training need every mask) or any case
    that cannot be read whole: every image and mask is read once
    (:meth:`~msnas_graph.data.SegmentationDataset.validate`: truncated files, mask labels
    beyond the dataset's classes, sizes that differ), so a run fails before its first step,
    not in an epoch or at ``evaluate``."""
    ds = load_dataset(source, **kw)
    if len(ds) == 0:
        raise DataError(f"{source}: the dataset has no cases")
    if labelled and not ds.labelled:
        raise DataError(
            f"{source}: some cases have no mask; searching and training need a mask for every "
            f"case (put the masks next to the images, or leave unlabelled cases out)"
        )
    if labelled:
        ds.validate()
    return ds


def split_cases(ds: SegmentationDataset, cfg: Any) -> tuple[list[int], list[int], list[int]]:
    """``(train, val, test)`` indices of ``ds`` from a config's ``folds`` (a folds JSON path or
    ``None``), ``test_fold``, ``val_fraction`` and ``seed``
    (:func:`~msnas_graph.data.train_val_test_split`)."""
    folds = load_folds(cfg.folds) if cfg.folds else None
    return train_val_test_split(
        ds, test_fold=cfg.test_fold, folds=folds, val_fraction=cfg.val_fraction, seed=cfg.seed
    )
