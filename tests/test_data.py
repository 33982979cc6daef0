"""The data path: shard-backed and cached photos give the same batches, the same order and the same weights."""
import numpy as np
import pandas as pd
import pytest
import torch

from weldnet.core.config import DataError
from weldnet.core.params import LossParams, ModelParams, SamplingParams, TrainParams
from weldnet.photos.dataset import (
    PhotoCache,
    PhotoDataset,
    RankBatches,
    TensorPhotos,
    host_size,
    load_split_images,
    set_loader_epoch,
    split_dataset,
)
from weldnet.photos.inputs import resized_photos
from weldnet.photos.shards import load_images, plan_shards, read_index, shard_photos, write_order, write_shards
from weldnet.photos.transforms import resize_uint8
from weldnet.strategies.losses import build_loss
from weldnet.strategies.models import build_model
from weldnet.strategies.sampling import EpochSampler, build_loader
from weldnet.train.loop import FitSettings, fit, task_input
from weldnet.train.predict import model_input, predict_logits, validation_scores

CPU = torch.device("cpu")
STORED = 24          # the shards' photo size in these tests (preprocess.size)
SIZE = 16            # the model's input size


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """90 bluebox photos (class 1: a bright square) in shards of 20 at the stored size, and the split table."""
    out = tmp_path_factory.mktemp("processed")
    rng = np.random.default_rng(0)
    n = 90
    labels = (np.arange(n) % 5 == 0).astype(np.int64)
    images = rng.integers(0, 90, size=(n, STORED, STORED, 3), dtype=np.uint8)
    images[labels == 1, 6:18, 6:18] = 240
    names = [f"b/{k}.jpg" for k in range(n)]
    index = plan_shards(names, ["bluebox"] * n, 20)
    ordered = write_order(index)
    position = {name: k for k, name in enumerate(names)}
    write_shards(out, ordered, (images[position[name]] for name in ordered["image"]), STORED)
    index.to_csv(out / "index.csv", index=False)
    split = pd.DataFrame({"image": names, "rig": "bluebox", "label": labels,
                          "class": np.where(labels == 1, "flawed", "fine"),
                          "split": np.where(np.arange(n) % 3 == 0, "val", "train")})
    return out, split, images


@pytest.fixture(scope="module")
def shards(processed, tmp_path_factory):
    """The same photos at the model's input size, as the inputs stage writes them (data/inputs)."""
    stored, split, images = processed
    out = tmp_path_factory.mktemp("inputs")
    ordered = write_order(read_index(stored / "index.csv"))
    write_shards(out, ordered, resized_photos(ordered, stored, SIZE), SIZE)
    (out / "index.csv").write_bytes((stored / "index.csv").read_bytes())
    return out, split, images


def datasets(shards, cache_mb: float):
    out, split, _ = shards
    cache = PhotoCache(cache_mb, CPU, workers=2)
    return split_dataset(split, read_index(out / "index.csv"), out, "train", SIZE, cache)


def test_the_inputs_stage_stores_every_photo_as_resizing_it_on_read_would(processed, tmp_path, monkeypatch):
    from conftest import params_yaml

    from stages import inputs

    stored, _, images = processed
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(params_yaml(model={"input_size": SIZE}))
    inputs.main(["--shards", str(stored), "--out", "inputs"])
    index = read_index(tmp_path / "inputs" / "index.csv")
    assert (tmp_path / "inputs" / "index.csv").read_bytes() == (stored / "index.csv").read_bytes()
    names = [f"b/{k}.jpg" for k in range(len(images))]
    assert torch.equal(torch.from_numpy(load_images(index, tmp_path / "inputs", names)),
                       resize_uint8(torch.from_numpy(images), SIZE))
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == sorted(p.name for p in stored.iterdir())


def test_shard_reads_match_the_whole_array_and_catch_a_missing_photo(processed):
    out, split, images = processed
    index = read_index(out / "index.csv")
    wanted = ["b/77.jpg", "b/3.jpg", "b/3.jpg", "b/41.jpg"]
    photos = shard_photos(index, out, wanted)
    assert np.array_equal(photos.fetch(np.arange(4)), load_images(index, out, wanted))
    assert np.array_equal(photos.fetch(np.array([3, 0])), images[[41, 77]])
    assert len(photos.fetch(np.zeros(0, dtype=np.int64))) == 0
    assert len(photos._maps) <= photos.open_limit         # never more than a few shards mapped
    with pytest.raises(DataError, match="not in .*index.csv.*re-run the preprocess"):
        shard_photos(index, out, ["b/nope.jpg"])


def test_cached_and_shard_backed_batches_are_identical_epoch_after_epoch(shards):
    cached, labels = datasets(shards, cache_mb=64)
    streamed, _ = datasets(shards, cache_mb=0)
    assert cached.in_memory and not streamed.in_memory
    assert torch.equal(cached.source.images, resize_uint8(torch.from_numpy(shards[2][
        np.flatnonzero(shards[1]["split"] == "train")]), SIZE))
    for sampler in ("none", "oversample", "stratified"):
        loaders = [build_loader(data, labels, 8, sampler, 3, SamplingParams(target_ratio=0.6), workers=workers)
                   for data, workers in ((cached, 1), (streamed, 1), (streamed, 2))]
        for epoch in (0, 1, 5):
            batches = []
            for loader in loaders:
                set_loader_epoch(loader, epoch)
                batches.append(list(loader))
            for other in batches[1:]:
                assert len(other) == len(batches[0])
                for (x0, y0), (x1, y1) in zip(batches[0], other):
                    assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_the_loader_follows_the_sampler_order(shards):
    cached, labels = datasets(shards, cache_mb=64)
    loader = build_loader(cached, labels, 7, "none", 0, SamplingParams())
    set_loader_epoch(loader, 2)
    order = EpochSampler(labels, "none", 7, 0, SamplingParams())
    order.set_epoch(2)
    expected = torch.tensor(labels)[list(order)]
    assert torch.equal(torch.cat([y for _, y in loader]), expected)


def test_the_cache_spends_its_budget_and_reads_the_rest_from_the_shards(shards, capsys):
    out, split, _ = shards
    index = read_index(out / "index.csv")
    one = SIZE * SIZE * 3
    n_train = int((split["split"] == "train").sum())
    cache = PhotoCache((n_train + 5) * one / 2**20, CPU)
    train, _ = split_dataset(split, index, out, "train", SIZE, cache)
    val, _ = split_dataset(split, index, out, "val", SIZE, cache)
    assert train.in_memory and not val.in_memory
    assert "do not fit the cache" in capsys.readouterr().out
    assert cache.left == 5 * one


def run_fit(dataset, labels, x_val, y_val, workers=1, size=SIZE):
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4, input_size=SIZE), 2)
    params = TrainParams(epochs=3, batch_size=8, lr=0.05)
    loader = build_loader(dataset, labels, params.batch_size, "oversample", 0, SamplingParams(target_ratio=0.7),
                          workers=workers)
    logs = []
    run = FitSettings(CPU, task_input(SIZE, True),
                      lambda m: validation_scores(predict_logits(m, x_val, CPU, SIZE, 16, workers=workers), y_val,
                                                  ["fine", "flawed"]),
                      lambda *a: logs.append(a), seed=0, name="t")
    result = fit(model, build_loss("bayesian", np.bincount(labels).tolist(), LossParams()), loader, run, params)
    return result, logs


def test_the_shard_backed_path_trains_the_same_weights_as_the_cached_one(shards):
    out, split, _ = shards
    index = read_index(out / "index.csv")
    cached, labels = datasets(shards, cache_mb=64)
    streamed, _ = datasets(shards, cache_mb=0)
    val_cached, y_val = split_dataset(split, index, out, "val", SIZE, PhotoCache(64, CPU))
    val_streamed, _ = split_dataset(split, index, out, "val", SIZE, PhotoCache(0, CPU))
    # what the train stage held before: the whole split in RAM, resized once
    before, _ = load_split_images(split, out, "train", SIZE)
    first, logs = run_fit(PhotoDataset(before, torch.tensor(labels)), labels, val_cached, y_val)
    for data, val, workers in ((cached, val_cached, 1), (streamed, val_streamed, 2)):
        again, again_logs = run_fit(data, labels, val, y_val, workers=workers)
        assert again_logs == logs
        assert all(torch.equal(first.state[k], again.state[k]) for k in first.state)


def test_the_inputs_stage_photos_are_what_resizing_on_the_device_gives(shards, processed):
    """A batch stored at another size is resized where the model runs, by the inputs stage's formula."""
    out, split, _ = shards
    index = read_index(out / "index.csv")
    as_read, _ = split_dataset(split, index, out, "train", SIZE, PhotoCache(64, CPU))
    stored, _ = split_dataset(split, index, processed[0], "train", None, PhotoCache(64, CPU))
    assert stored.source.images.shape[1:] == (STORED, STORED, 3)
    rows = np.arange(len(as_read))
    x_read, _ = as_read.__getitems__(rows)
    x_stored, _ = stored.__getitems__(rows)
    assert torch.equal(model_input(x_read, SIZE), model_input(x_stored, SIZE))
    assert host_size(CPU, SIZE) == SIZE and host_size(torch.device("cuda"), SIZE) is None
    with pytest.raises(DataError, match=f"holds {STORED}px photos where {SIZE}px are needed.*data/inputs"):
        split_dataset(split, index, processed[0], "train", SIZE, PhotoCache(64, CPU))


def test_subsets_share_the_photos_and_compose(shards):
    cached, labels = datasets(shards, cache_mb=64)
    part = cached.subset(np.array([5, 1, 9, 1]))
    again = part.subset(np.array([2, 0]))
    assert isinstance(again.source, TensorPhotos) and again.source is cached.source
    x, y = again.__getitems__([0, 1])
    expected, expected_y = cached.__getitems__([9, 5])
    assert torch.equal(x, expected) and torch.equal(y, expected_y)


def test_rank_batches_split_each_global_batch_and_keep_the_strata():
    labels = np.array([0] * 45 + [1] * 5)
    sampler = EpochSampler(labels, "stratified", 10, 0, SamplingParams())

    def epoch(rank: int = 0, world: int = 1) -> list[list[int]]:
        batches = RankBatches(sampler, 10, rank, world)
        batches.set_epoch(4)
        return list(batches)

    single = epoch()
    assert len(single) == len(RankBatches(sampler, 10)) == 5
    for world in (2, 3):
        parts = [epoch(rank, world) for rank in range(world)]
        assert all(len(p) == len(RankBatches(sampler, 10, 0, world)) == 5 for p in parts)
        for step, batch in enumerate(single):
            joined = [i for rank in range(world) for i in parts[rank][step]]
            assert joined == batch                                  # the global batch is the single process's
            assert labels[joined].sum() == 1                        # 10% flawed in every stratified batch
    tiny = list(range(21))                                          # a last global batch of 1 photo
    assert [len(b) for b in RankBatches(tiny, 10, 1, 2)] == [5, 5] and len(RankBatches(tiny, 10, 1, 2)) == 2
    assert [len(b) for b in RankBatches(tiny, 10)] == [10, 10, 1]
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        RankBatches(tiny, 10, 2, 2)


def test_thumbnails_spilled_to_disk_train_the_audit_model_like_thumbnails_in_ram(tmp_path):
    from weldnet.audit.model import FitSettings, fit_flag_model, predict_flags

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(40, 16, 16, 3), dtype=np.uint8)
    targets = (rng.random((40, 2)) < 0.4).astype(np.float32)
    spilled = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.uint8, shape=images.shape)
    spilled[:] = images
    settings = FitSettings(epochs=2, batch_size=8, learning_rate=0.003, weight_decay=1e-4, warmup=0.2, width=4)
    rows = np.arange(0, 40, 2)
    copied = fit_flag_model(images[rows], targets[rows], settings, seed=3)
    viewed = fit_flag_model(spilled, targets, settings, seed=3, rows=rows)
    for a, b in zip(copied.state_dict().values(), viewed.state_dict().values()):
        assert torch.equal(a, b)
    held = np.arange(1, 40, 2)
    assert np.array_equal(predict_flags([copied], images[held], batch_size=7),
                          predict_flags([viewed], spilled, batch_size=7, rows=held))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_the_gpu_cache_holds_stored_photos_on_the_device(shards, processed):
    out, split, _ = processed
    device = torch.device("cuda")
    data, _ = split_dataset(split, read_index(out / "index.csv"), out, "train", host_size(device, SIZE),
                            PhotoCache(64, device))
    assert data.in_memory and data.source.images.is_cuda and data.source.images.shape[1] == STORED
    x, _ = data.__getitems__([0, 3])
    cpu, _ = datasets(shards, 64)
    torch.testing.assert_close(model_input(x, SIZE).cpu(), model_input(cpu.__getitems__([0, 3])[0], SIZE),
                               atol=2 / 255 / 0.225, rtol=0)


@cuda
@pytest.mark.parametrize("mixed", [True, False])
def test_training_on_cuda_with_and_without_mixed_precision(processed, mixed):
    from weldnet.train.device import precision_for

    out, split, _ = processed
    device = torch.device("cuda")
    index = read_index(out / "index.csv")
    precision = precision_for(device, mixed)
    assert (precision.dtype is not None) == mixed and precision.channels_last == mixed
    train, labels = split_dataset(split, index, out, "train", None, PhotoCache(0, device))   # pinned, streamed
    val, y_val = split_dataset(split, index, out, "val", None, PhotoCache(64, device))       # on the GPU
    torch.manual_seed(0)
    model = build_model(ModelParams(width=8, input_size=SIZE), 2)
    loader = build_loader(train, labels, 8, "oversample", 0, SamplingParams(target_ratio=0.6), workers=2,
                          pin_memory=True)
    run = FitSettings(device, task_input(SIZE, True),
                      lambda m: validation_scores(predict_logits(m, val, device, SIZE, precision=precision), y_val,
                                                  ["fine", "flawed"]),
                      lambda *a: None, seed=0, name="cuda", precision=precision)
    result = fit(model, build_loss("cross_entropy", np.bincount(labels).tolist(), LossParams()), loader, run,
                 TrainParams(epochs=6, batch_size=8, lr=0.05))
    assert result.scores["val/per_class_accuracy"] > 0.8
    assert all(v.dtype != torch.bfloat16 for v in result.state.values())   # weights stay float32


def test_the_cpu_trains_in_bf16_only_with_amx_and_in_float32_when_mixed_precision_is_off(monkeypatch):
    import torch

    from weldnet.train.device import CPU_BF16, CPU_CHANNELS_LAST, FP32, Precision, cpu_has_amx, precision_for

    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_has_amx() else None
    assert precision_for(cpu, True).dtype is expected and precision_for(cpu, True).channels_last
    assert precision_for(cpu, False) == FP32 and not FP32.channels_last
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")   # tiles hidden from oneDNN: float32
    assert not cpu_has_amx() and precision_for(cpu, True).dtype is None
    # recorded scores are float32 in the training layout: what the exported bundles compute
    for precision in (CPU_BF16, CPU_CHANNELS_LAST, FP32):
        assert precision.scoring() == Precision(channels_last=precision.channels_last)


def test_bf16_autocast_on_the_cpu_learns_and_keeps_float32_weights(processed):
    """The AMX path, run on any CPU (without AMX bf16 is only slower): same loop, same answer quality."""
    from weldnet.train.device import CPU_BF16

    out, split, _ = processed
    device = torch.device("cpu")
    index = read_index(out / "index.csv")
    train, labels = split_dataset(split, index, out, "train", None, PhotoCache(64, device))
    val, y_val = split_dataset(split, index, out, "val", None, PhotoCache(64, device))
    torch.manual_seed(0)
    model = build_model(ModelParams(width=8, input_size=SIZE), 2)
    loader = build_loader(train, labels, 8, "oversample", 0, SamplingParams(target_ratio=0.6))
    run = FitSettings(device, task_input(SIZE, True),
                      lambda m: validation_scores(predict_logits(m, val, device, SIZE, precision=CPU_BF16), y_val,
                                                  ["fine", "flawed"]),
                      lambda *a: None, seed=0, name="bf16", precision=CPU_BF16)
    result = fit(model, build_loss("cross_entropy", np.bincount(labels).tolist(), LossParams()), loader, run,
                 TrainParams(epochs=6, batch_size=8, lr=0.05))
    assert result.scores["val/per_class_accuracy"] > 0.8
    assert all(v.dtype != torch.bfloat16 for v in result.state.values())
