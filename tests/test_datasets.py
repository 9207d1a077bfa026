"""datasets.py: readers on files made here in the official formats, downloads through a local HTTP server,
the paper's splits, memory sets and augmentation."""
import functools
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading

import numpy as np
import pytest
import torch

import datasets as D
from readers import cifar10
from readers import digits as digits_reader
from conftest import CIFAR_SUBSET


# --- helpers: official formats ------------------------------------------------------------------

def cifar_batch_bytes(n, seed, bytes_keys=True, labels=None):
    rng = np.random.RandomState(seed)
    data = rng.randint(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = list(rng.randint(0, 10, size=n)) if labels is None else labels
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    return pickle.dumps({key("batch_label"): "b", key("data"): data, key("labels"): [int(x) for x in labels]},
                        protocol=2), data


def write_cifar_folder(root, n=20, bytes_keys=True):
    folder = root / cifar10.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    arrays = {}
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        raw, data = cifar_batch_bytes(n, i, bytes_keys)
        (folder / name).write_bytes(raw)
        arrays[name] = data
    return folder, arrays


def cifar_archive(tmp_path, n=10):
    source = tmp_path / "source"
    write_cifar_folder(source, n)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / cifar10.CIFAR10_FOLDER, arcname=cifar10.CIFAR10_FOLDER)
    return buffer.getvalue()


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving files from a folder; stops at the end of the test."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- CIFAR10 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar_reader_python2_pickles(tmp_path, bytes_keys):
    _, arrays = write_cifar_folder(tmp_path, n=12, bytes_keys=bytes_keys)
    train, test = D.load_dataset("CIFAR10", tmp_path, download=False)
    assert train.images.shape == (60, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (12, 3, 32, 32)
    # CHW order: the first 1024 bytes of a row are the red plane
    assert np.array_equal(train.images[0].numpy().reshape(-1), arrays["data_batch_1"][0])
    assert np.array_equal(test.images[11].numpy().reshape(-1), arrays["test_batch"][11])
    assert train.classes[0] == "airplane"


def test_cifar_corrupt_and_malformed_batches(tmp_path):
    folder, _ = write_cifar_folder(tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(D.DatasetError, match=r"data_batch_3 is not a readable CIFAR-10 batch.*replace it") as error:
        D.load_dataset("CIFAR10", tmp_path, download=False)
    assert "delete" not in str(error.value), "never advise deleting a (possibly hand-made) dataset folder"
    (folder / "data_batch_3").write_bytes(raw)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, protocol=2))
    with pytest.raises(D.DatasetError, match=r"test_batch: 'data' must be uint8 \[N, 3072\]"):
        D.load_dataset("CIFAR10", tmp_path, download=False)
    (folder / "test_batch").write_bytes(cifar_batch_bytes(4, 0, labels=[0, 1, 2, 10])[0])
    with pytest.raises(D.DatasetError, match=r"labels must be in \[0, 9\], found \[0, 10\]"):
        D.load_dataset("CIFAR10", tmp_path, download=False)


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    folder, _ = write_cifar_folder(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(D.DatasetError, match="refusing to unpickle"):
        D.load_dataset("CIFAR10", tmp_path, download=False)


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(D.DatasetError, match=r"CIFAR10: missing \['data_batch_1'.*cifar-10-python.tar.gz"):
        D.load_dataset("CIFAR10", tmp_path, download=False)


def test_cifar_download_good_archive_from_local_server(tmp_path, http_server, monkeypatch):
    served, base = http_server
    archive = cifar_archive(tmp_path)
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    monkeypatch.setattr(cifar10, "CIFAR10_URL", base + "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    root = tmp_path / "data"
    train, test = D.load_dataset("CIFAR10", root)
    assert len(train) == 50 and len(test) == 10
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_cifar_download_corrupt_archive_rejected_and_not_kept(tmp_path, http_server, monkeypatch):
    served, base = http_server
    archive = cifar_archive(tmp_path)
    (served / "cifar-10-python.tar.gz").write_bytes(archive[:-100])  # truncated in transit
    monkeypatch.setattr(cifar10, "CIFAR10_URL", base + "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    root = tmp_path / "data"
    with pytest.raises(D.DatasetError, match=r"arrived with md5 .* expected .*nothing was kept"):
        D.load_dataset("CIFAR10", root)
    assert list(root.iterdir()) == [], "no partial or corrupt file may stay behind"


def test_download_offline_error_names_url_and_folder(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/train_32x32.mat"
    with pytest.raises(D.DatasetError) as error:
        D.download_file(url, tmp_path / "train_32x32.mat", "0" * 32, timeout=5)
    message = str(error.value)
    assert url in message and str(tmp_path) in message and "by hand" in message
    assert list(tmp_path.iterdir()) == []


# --- SVHN -----------------------------------------------------------------------------------------

def write_svhn(path, n, seed, labels=None):
    import scipy.io
    rng = np.random.RandomState(seed)
    x = rng.randint(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1 if labels is None else np.asarray(labels)).reshape(-1, 1).astype(np.uint8)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_reader_maps_label_10_to_0(tmp_path):
    x, y = write_svhn(tmp_path / "train_32x32.mat", 25, 0)
    write_svhn(tmp_path / "test_32x32.mat", 10, 1)
    train, test = D.load_dataset("SVHN", tmp_path, download=False)
    assert train.images.shape == (25, 3, 32, 32) and len(test) == 10
    assert train.labels[9].item() == 0 and train.labels[0].item() == 1  # y=10 -> 0, y=1 -> 1
    assert np.array_equal(train.images[3].numpy(), x[:, :, :, 3].transpose(2, 0, 1))


def test_svhn_bad_files(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", 5, 0)
    (tmp_path / "test_32x32.mat").write_bytes((tmp_path / "train_32x32.mat").read_bytes()[:300])
    with pytest.raises(D.DatasetError, match=r"test_32x32.mat is not a readable SVHN .mat file"):
        D.load_dataset("SVHN", tmp_path, download=False)
    write_svhn(tmp_path / "test_32x32.mat", 3, 0, labels=[1, 2, 11])
    with pytest.raises(D.DatasetError, match=r"SVHN labels must be in \[1, 10\]"):
        D.load_dataset("SVHN", tmp_path, download=False)
    import scipy.io
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"images": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(D.DatasetError, match=r"expected variables 'X' and 'y', found \['images', 'y'\]"):
        D.load_dataset("SVHN", tmp_path, download=False)
    os.remove(tmp_path / "test_32x32.mat")
    with pytest.raises(D.DatasetError, match=r"SVHN: missing \['test_32x32.mat'\].*housenumbers"):
        D.load_dataset("SVHN", tmp_path, download=False)


# --- CINIC10 --------------------------------------------------------------------------------------

def write_png_tree(root, per_class=3, classes=("airplane", "cat", "dog", "automobile", "bird", "deer", "frog", "horse",
                                                 "ship", "truck")):
    from PIL import Image
    rng = np.random.RandomState(0)
    for split in ("train", "test"):
        for name in classes:
            (root / "CINIC10" / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / "CINIC10" / split / name / f"{name}_{i}.png")


def test_cinic_png_tree_read_and_cached(tmp_path, monkeypatch):
    write_png_tree(tmp_path)
    train, test = D.load_dataset("CINIC10", tmp_path)
    assert len(train) == 30 and len(test) == 30
    assert train.classes == tuple(sorted(train.classes)) and train.classes[0] == "airplane"
    from PIL import Image
    first = np.asarray(Image.open(tmp_path / "CINIC10/train/airplane/airplane_0.png"))
    assert np.array_equal(train.images[0].numpy(), first.transpose(2, 0, 1))
    assert (tmp_path / "CINIC10" / "train.npz").is_file()
    # second load comes from the cache: no PNG is decoded
    monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again, _ = D.load_dataset("CINIC10", tmp_path)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_cinic_cache_refreshed_when_folder_changes(tmp_path):
    write_png_tree(tmp_path)
    train, _ = D.load_dataset("CINIC10", tmp_path)
    from PIL import Image
    new = tmp_path / "CINIC10/train/cat/cat_new.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(new)
    stamp = os.stat(tmp_path / "CINIC10" / "train.npz").st_mtime + 5
    os.utime(new.parent, (stamp, stamp))
    again, _ = D.load_dataset("CINIC10", tmp_path)
    assert len(again) == len(train) + 1


def test_cinic_errors(tmp_path):
    with pytest.raises(D.DatasetError, match=r"CINIC10: missing .*not downloaded automatically"):
        D.load_dataset("CINIC10", tmp_path)
    write_png_tree(tmp_path, per_class=1)
    (tmp_path / "CINIC10/train/cat/broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(D.DatasetError, match=r"broken.png is not a readable image"):
        D.load_dataset("CINIC10", tmp_path)
    assert not (tmp_path / "CINIC10" / "train.npz").exists(), "no cache from a failed read"
    assert not any(p.name.endswith(".part") for p in (tmp_path / "CINIC10").iterdir())
    os.remove(tmp_path / "CINIC10/train/cat/broken.png")
    from PIL import Image
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "CINIC10/test/cat/small.png")
    with pytest.raises(D.DatasetError, match=r"small.png is 28x28, expected a 32x32 image"):
        D.load_dataset("CINIC10", tmp_path)


# --- DIGITS and the shared CIFAR subset -------------------------------------------------------------

def test_digits_fixed_split_and_constants():
    train, test = D.load_dataset("DIGITS", None)
    assert len(train) == 1297 and len(test) == 500
    assert train.images.shape[1:] == (3, 32, 32) and train.images.max() > 200
    again, _ = D.load_dataset("DIGITS", None)
    assert torch.equal(again.images, train.images)
    pixels = train.images.float() / 255
    spec = D.get_spec("DIGITS")
    assert abs(pixels.mean().item() - spec.mean[0]) < 1e-3 and abs(pixels.std().item() - spec.std[0]) < 1e-3
    assert set(test.labels.tolist()) == set(range(10))


def test_shared_cifar_subset_loads():
    if not (CIFAR_SUBSET / cifar10.CIFAR10_FOLDER).is_dir():
        pytest.skip(f"shared CIFAR-10 subset not present at {CIFAR_SUBSET}")
    train, test = D.load_dataset("CIFAR10", CIFAR_SUBSET, download=False)
    assert len(train) == 4000 and len(test) == 660
    assert train.labels.bincount(minlength=10).min() > 300  # real, roughly balanced labels


# --- protocol ---------------------------------------------------------------------------------------

def test_split_sizes_determinism_disjointness_and_equality_with_random_split():
    subset, validation = D.split_indices(5000, 1000, 600, seed=3)
    assert len(subset) == 1000 and len(validation) == 600
    assert not set(subset.tolist()) & set(validation.tolist())
    again, _ = D.split_indices(5000, 1000, 600, seed=3)
    other, _ = D.split_indices(5000, 1000, 600, seed=4)
    assert torch.equal(subset, again) and not torch.equal(subset, other)
    whole, _ = D.split_indices(5000, D.ALL_TRAIN_EXAMPLES, 600, seed=3)
    assert len(whole) == 4400
    rest, val = torch.utils.data.random_split(range(5000), [4400, 600], generator=torch.Generator().manual_seed(3))
    paper_subset, _ = torch.utils.data.random_split(rest, [1000, 3400], generator=torch.Generator().manual_seed(3))
    assert subset.tolist() == list(paper_subset) and validation.tolist() == list(val)


@pytest.fixture(scope="module")
def digits():
    return D.load_dataset("DIGITS", None)


def test_memory_drawn_from_subset_or_full(digits):
    train, test = digits
    spec = D.get_spec("DIGITS")
    data = D.ExperimentData.build(spec, train, test, 300, 200, seed=0, memory_source="subset", mem_examples=50)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([data.draw_memory(g) for _ in range(40)])
    assert set(drawn.tolist()) <= set(data.subset.tolist())
    one = data.draw_memory(g)
    assert len(set(one.tolist())) == 50, "a memory set has distinct images"
    memory = data.memory_set(g)
    assert torch.equal(memory.labels, data.train_labels[memory.indices]) and memory.images.shape == (50, 3, 32, 32)
    full = D.ExperimentData.build(spec, train, test, 300, 200, seed=0, memory_source="full", mem_examples=50)
    drawn = torch.cat([full.draw_memory(g) for _ in range(40)])
    assert not set(drawn.tolist()) <= set(full.subset.tolist())


def test_bad_sizes_and_names(digits):
    train, test = digits
    spec = D.get_spec("DIGITS")
    with pytest.raises(D.DatasetError, match="train_examples must be a positive int, got 0"):
        D.ExperimentData.build(spec, train, test, 0, 200, seed=0)
    with pytest.raises(D.DatasetError, match=r"mem_examples=400 is larger than the subset memory pool \(300 images\)"):
        D.ExperimentData.build(spec, train, test, 300, 200, seed=0, mem_examples=400)
    with pytest.raises(D.DatasetError, match=r"val_examples=6000 .* has 1297 images"):
        D.ExperimentData.build(spec, train, test, 300, 6000, seed=0)
    with pytest.raises(D.DatasetError, match=r"unknown dataset 'MNIST'; available datasets are \['CIFAR10'"):
        D.load_dataset("MNIST", "x")


def test_flip_only_on_training_batches_of_flip_datasets(digits):
    train, test = digits
    for name, flips in (("CIFAR10", True), ("DIGITS", False)):  # DIGITS images under each dataset's rules
        data = D.ExperimentData.build(D.get_spec(name), train, test, 300, 200, seed=0, mem_examples=64)
        g = torch.Generator().manual_seed(0)
        batch = data.subset[torch.randperm(300, generator=torch.Generator().manual_seed(0))][:128]  # the first batch
        plain = D.normalize(data.train_images[batch], data.spec.mean, data.spec.std)
        images, labels = next(data.batches(128, g))
        flipped = (~torch.isclose(images, plain).flatten(1).all(1))
        assert torch.equal(labels, data.train_labels[batch])
        if flips:
            assert 30 < flipped.sum() < 98, "about half of a CIFAR10 batch is flipped"
            assert torch.allclose(images[flipped], plain[flipped].flip(-1))
        else:
            assert flipped.sum() == 0
        memory = data.draw_memory(g)
        assert torch.equal(data.memory_batch(memory), D.normalize(data.train_images[memory], data.spec.mean, data.spec.std))
        test_images, _ = data.test_batch(torch.arange(20))
        assert torch.equal(test_images, D.normalize(data.test_images[:20], data.spec.mean, data.spec.std))


def indexed_images(n):
    """n distinct images whose first two pixels spell their index (to read back which image a batch holds)."""
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(n) % 256, torch.arange(n) // 256
    return D.ImageSet(images, torch.arange(n) % 10, tuple(str(d) for d in range(10)))


def test_batches_cover_subset_once_and_drop_last():
    images = indexed_images(700)
    spec = D.get_spec("DIGITS")
    data = D.ExperimentData.build(spec, images, images, 300, 200, seed=0)
    batches = list(data.batches(128, torch.Generator().manual_seed(0)))
    assert [len(x) for x, _ in batches] == [128, 128] and data.steps_per_epoch(128) == 2
    pixels = torch.cat([D.denormalize(x, spec.mean, spec.std)[:, 0, 0, :2] for x, _ in batches]).mul(255).round().long()
    seen = (pixels[:, 0] + 256 * pixels[:, 1]).tolist()
    assert len(set(seen)) == 256 and set(seen) <= set(data.subset.tolist())
    assert torch.equal(torch.cat([y for _, y in batches]), images.labels[seen])
    # fewer examples than a batch: one batch of all of them (the paper's batch_size = train_examples)
    small = D.ExperimentData.build(spec, images, images, 50, 200, seed=0)
    assert [len(x) for x, _ in small.batches(128, torch.Generator())] == [50]


def test_denormalize_inverts_normalize():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    spec = D.get_spec("CIFAR10")
    restored = torch.stack([D.denormalize(x, spec.mean, spec.std) for x in D.normalize(images, spec.mean, spec.std)])
    torch.testing.assert_close(restored, images.float() / 255, atol=1e-5, rtol=0)


def test_train_examples_beyond_what_the_split_leaves_is_refused_and_100000_means_all(digits):
    train, test = digits
    spec = D.get_spec("DIGITS")
    with pytest.raises(D.DatasetError, match=r"train_examples=1200 is more than the 1097 training images left after "
                                             r"holding out val_examples=200 of 1297: use at most 1097, 100000"):
        D.ExperimentData.build(spec, train, test, 1200, 200, seed=0)
    everything = D.ExperimentData.build(spec, train, test, D.ALL_TRAIN_EXAMPLES, 200, seed=0)
    assert len(everything.subset) == 1097
    with pytest.raises(D.DatasetError, match="train_examples=1296 is more than the 1 training images left"):
        D.ExperimentData.build(spec, train, test, 1296, 1296, seed=0)


def test_memory_flip_flips_about_half_of_each_memory_set(digits):
    train, test = digits
    data = D.ExperimentData.build(D.get_spec("CINIC10"), train, test, 300, 200, seed=0, mem_examples=100,
                                  memory_flip=True)
    memory = data.memory_set(torch.Generator().manual_seed(0))
    plain = data.memory_batch(memory.indices)
    flipped = ~torch.isclose(memory.images, plain).flatten(1).all(1)
    assert 25 < flipped.sum() < 75 and torch.allclose(memory.images[flipped], plain[flipped].flip(-1))
    unflipped = D.ExperimentData.build(D.get_spec("CINIC10"), train, test, 300, 200, seed=0, mem_examples=100)
    memory = unflipped.memory_set(torch.Generator().manual_seed(0))
    assert torch.equal(memory.images, unflipped.memory_batch(memory.indices))


def test_cifar_batch_pickled_with_protocol_5_loads(tmp_path):
    folder = tmp_path / cifar10.CIFAR10_FOLDER
    folder.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.randint(0, 256, size=(4, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": [1, 2, 3, 4]}, protocol=5))
    train, test = D.load_dataset("CIFAR10", tmp_path, download=False)
    assert len(train) == 20 and train.labels[:4].tolist() == [1, 2, 3, 4]


def test_digits_table_is_scikit_learns():
    from sklearn.datasets import load_digits

    pixels, targets = digits_reader._digits_table()
    digits = load_digits()
    assert np.array_equal(pixels, digits.data) and np.array_equal(targets, digits.target)
