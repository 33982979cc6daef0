"""Training and evaluation inputs: photos as a ``Dataset`` of (uint8 image, target), and the loaders over them.

A split's photos are read from the preprocess shards, memory-mapped
(:class:`weldnet.photos.shards.ShardPhotos`), a batch at a time, so memory stays bounded
whatever the size of the export. :class:`PhotoCache` keeps a split's photos where
the model runs (in RAM, or on the GPU) when they fit its budget (``loader.cache_mb``);
then a batch is one indexing of a tensor. Either way a batch holds the same bytes
(tests/test_data.py), so the cache and the number of loader workers never change a
result.

Where photos are resized: on the CPU they are resized to the model's input size
as they are read (in the loader's worker processes) and cached at that size; on
CUDA they travel at their stored size (256) in pinned memory, or sit on the GPU,
and the device resizes them (``weldnet.train.training.task_input``), with the same
formula (``weldnet.photos.transforms.resize_uint8``).

:class:`PhotoDataset` yields ``(uint8 HWC image, target)`` and fetches a whole
batch at once (``__getitems__``). The strategy's sampler decides which rows an
epoch visits and in which order (``weldnet.strategies.sampling.EpochSampler``); under
torch.distributed each rank loads its part of every global batch
(``weldnet.photos.dataset.RankBatches``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from weldnet.core.pool import worker_count
from weldnet.photos.shards import INDEX, ShardPhotos, read_index, shard_photos
from weldnet.photos.transforms import resize_uint8

CHUNK = 64    # photos read (and resized) at a time when a cache is filled: a 64 x 256 px float copy is 50 MB


class TensorPhotos:
    """Photos held as one uint8 tensor (n, S, S, 3), in RAM or on the GPU."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"photos must be a uint8 (n, S, S, 3) tensor, got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def fetch(self, positions: np.ndarray) -> torch.Tensor:
        return self.images[torch.as_tensor(positions, dtype=torch.long, device=self.images.device)]


class ResizedShards:
    """:class:`ShardPhotos` resized to ``size`` x ``size`` as they are read (``size`` None: as stored)."""

    def __init__(self, shards: ShardPhotos, size: int | None):
        self.shards, self.size = shards, size

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def shape(self) -> tuple[int, int, int]:
        side = self.size or self.shards.shape[0]
        return side, side, self.shards.shape[2]

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.shape))

    def fetch(self, positions: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(self.shards.fetch(positions))
        return images if self.size is None else resize_uint8(images, self.size)


Photos = TensorPhotos | ResizedShards


class PhotoDataset(Dataset):
    """uint8 NHWC photos and their targets (class indices, or 0/1 flag rows for multi-label training).

    ``images``: a uint8 tensor, or a photo source (:class:`TensorPhotos`,
    :class:`ResizedShards`). ``rows`` (default: all) picks positions of the source
    and targets; :meth:`subset` composes them without copying a photo.
    """

    def __init__(self, images: torch.Tensor | Photos, targets: torch.Tensor, rows: np.ndarray | None = None):
        self.source: Photos = TensorPhotos(images) if isinstance(images, torch.Tensor) else images
        if len(self.source) != len(targets):
            raise ValueError(f"{len(self.source)} photos but {len(targets)} targets")
        self.targets = targets
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.targets) if self.rows is None else len(self.rows)

    @property
    def in_memory(self) -> bool:
        """True when the photos are one tensor (RAM or GPU): batches need no worker process."""
        return isinstance(self.source, TensorPhotos)

    def positions(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return indices if self.rows is None else self.rows[indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.__getitems__([index])
        return images[0], targets[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.positions(indices)
        return self.source.fetch(positions), self.targets[torch.from_numpy(positions)]

    def subset(self, rows: np.ndarray) -> PhotoDataset:
        """The dataset of ``rows`` (indices into this one), sharing its photos."""
        return PhotoDataset(self.source, self.targets, self.positions(rows))


def _batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch  # PhotoDataset.__getitems__ already returns the stacked batch


def own_generator() -> torch.Generator:
    """A DataLoader's own generator: it draws its workers' base seed from this, not from torch's global one,
    so how photos are read (workers or not, persistent or not) never moves the training randomness."""
    return torch.Generator().manual_seed(0)


def loader_processes(workers: int) -> int:
    """DataLoader ``num_workers`` for a ``loader.workers`` value: 1 reads in this process (0 workers)."""
    n = worker_count(workers)
    return 0 if n <= 1 else n


def photo_loader(dataset: PhotoDataset, batch_size: int, sampler: Sampler[int], *, workers: int = 1,
                 pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """Batches of ``batch_size`` (images, targets) in the order ``sampler`` draws rows (this rank's part of each).

    Photos in memory are indexed in this process; photos on the shards are read by
    ``loader.workers`` processes, which stay up across epochs, into pinned memory
    when ``pin_memory`` (CUDA). The order of the batches never depends on either.
    """
    processes = 0 if dataset.in_memory else loader_processes(workers)
    return DataLoader(dataset, batch_sampler=RankBatches(sampler, batch_size, rank, world), collate_fn=_batch,
                      num_workers=processes, persistent_workers=processes > 0, generator=own_generator(),
                      pin_memory=pin_memory and not dataset.in_memory and torch.cuda.is_available())


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of the loader's sampler (an ``EpochSampler`` draws its order from (seed, epoch))."""
    loader.batch_sampler.set_epoch(epoch)


class _Chunks(Dataset):
    """Consecutive chunks of a photo source in shard order, for filling a cache in worker processes."""

    def __init__(self, photos: ResizedShards, chunks: list[np.ndarray]):
        self.photos, self.chunks = photos, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> tuple[np.ndarray, torch.Tensor]:
        return self.chunks[k], self.photos.fetch(self.chunks[k])


def materialise(photos: ResizedShards, device: torch.device, workers: int = 1) -> torch.Tensor:
    """All the photos as one uint8 tensor on ``device``, read in shard order, ``CHUNK`` at a time."""
    out = torch.empty((len(photos), *photos.shape), dtype=torch.uint8, device=device)
    order = photos.shards.read_order()
    chunks = [order[start:start + CHUNK] for start in range(0, len(order), CHUNK)]
    processes = loader_processes(workers) if len(chunks) > 1 else 0
    loader = DataLoader(_Chunks(photos, chunks), batch_size=None, num_workers=processes, generator=own_generator(),
                        pin_memory=device.type == "cuda" and processes > 0)
    for positions, images in loader:
        out[torch.as_tensor(positions, device=device)] = images.to(device, non_blocking=True)
    photos.shards.close()
    return out


class PhotoCache:
    """Keeps photos where the model runs while they fit a budget of ``budget_mb`` MiB; the rest stay on the shards.

    Each :meth:`hold` spends the budget: a stage that holds its training and its
    validation photos holds each only if, together, they fit.
    """

    def __init__(self, budget_mb: float, device: torch.device, workers: int = 1):
        self.left = int(budget_mb * 2**20)
        self.device, self.workers = device, workers

    def hold(self, photos: ResizedShards, what: str = "photos") -> Photos:
        need = photos.nbytes
        if need > self.left:
            print(f"  {what}: {len(photos)} photos ({need / 2**20:.0f} MiB) do not fit the cache "
                  f"({self.left / 2**20:.0f} MiB left of loader.cache_mb); reading them from the shards")
            return photos
        self.left -= need
        return TensorPhotos(materialise(photos, self.device, self.workers))


def host_size(device: torch.device, input_size: int) -> int | None:
    """The size photos are resized to as they are read: the input size on the CPU, none on CUDA (the GPU resizes)."""
    return None if device.type == "cuda" else input_size


def split_photos(split: pd.DataFrame, index: pd.DataFrame, shards: Path, name: str,
                 size: int | None) -> tuple[ResizedShards, np.ndarray]:
    """Photos of split ``name`` (resized to ``size`` as read) and their class labels, in split-table order."""
    rows = split[split["split"] == name]
    return ResizedShards(shard_photos(index, shards, rows["image"].tolist()), size), rows["label"].to_numpy()


def split_dataset(split: pd.DataFrame, index: pd.DataFrame, shards: Path, name: str, size: int | None,
                  cache: PhotoCache) -> tuple[PhotoDataset, np.ndarray]:
    """Split ``name`` as a dataset of (photo, class index), held by ``cache`` when it fits; and its labels."""
    photos, labels = split_photos(split, index, shards, name, size)
    return PhotoDataset(cache.hold(photos, f"{name} split"), torch.tensor(labels, dtype=torch.long)), labels


def load_split_images(split: pd.DataFrame, shards: Path, name: str, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 NHWC images of split ``name`` resized to ``size``, in RAM, and their class labels, in split-table order."""
    photos, labels = split_photos(split, read_index(shards / INDEX), shards, name, size)
    return materialise(photos, torch.device("cpu")), labels


def read_split(path: Path) -> pd.DataFrame:
    """data/split.csv as the imbalance stage wrote it (image ids kept as text)."""
    return pd.read_csv(path, dtype={"image": str, "rig": str, "class": str, "split": str}, keep_default_na=False)


def class_names(split: pd.DataFrame) -> list[str]:
    """The task's class names, by label (class 0 first)."""
    return list(split.drop_duplicates("label").sort_values("label")["class"])


class RankBatches(torch.utils.data.Sampler[list[int]]):
    """``DataLoader(dataset, batch_sampler=RankBatches(sampler, batch_size, rank, world))``.

    The sampler's epoch order is cut into consecutive global batches of
    ``batch_size`` (the last one partial), exactly as one process would; rank r of
    ``world`` yields the r-th of ``world`` near-equal consecutive parts of each
    (``numpy.array_split``). With ``world`` 1 this is torch's ``BatchSampler``
    without ``drop_last``. A global batch of fewer than ``world`` rows (a tiny last
    batch) would leave a rank without a photo, so every rank skips it.
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, rank: int = 0, world: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size = {batch_size} must be at least 1")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world} processes")
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(iter(self.sampler))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.world == 1:
                yield batch
            elif len(batch) >= self.world:
                yield np.array_split(np.asarray(batch, dtype=np.int64), self.world)[self.rank].tolist()

    def __len__(self) -> int:
        assert isinstance(self.sampler, Sized)
        full, last = divmod(len(self.sampler), self.batch_size)
        return full + int(last >= max(1, self.world) and last > 0)
