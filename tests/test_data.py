"""Data loaders on small files in the real archive formats; no test touches the network."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness import data
from harness.data import cache, cifar10, imdb, synthetic
from harness.errors import UsageError
from harness.specs import CNN, RNN


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


def make_cifar_archive(path: Path, per_batch: int = 6, seed: int = 0) -> dict:
    """A cifar-10-python.tar.gz of the real layout, with `per_batch` images per batch file."""
    rng = np.random.default_rng(seed)
    truth = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    with tarfile.open(path, "w:gz") as tar:
        for member in cifar10.TRAIN_MEMBERS + cifar10.TEST_MEMBERS:
            x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            y = rng.integers(0, 10, per_batch).tolist()
            split = "test" if member in cifar10.TEST_MEMBERS else "train"
            truth[f"{split}_x"].append(x)
            truth[f"{split}_y"] += y
            blob = pickle.dumps({b"batch_label": b"x", b"labels": y, b"data": x, b"filenames": []})
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return truth


def make_imdb_npz(path: Path) -> None:
    """imdb.npz as Keras ships it: object arrays of word-rank lists (rank 1 = most frequent)."""
    def obj(seqs):
        out = np.empty(len(seqs), dtype=object)
        out[:] = seqs
        return out

    train = [[1, 2, 3], list(range(1, 200)), [29_997, 29_996, 5], [7] * 10]
    test = [[4, 5], [29_999, 1]]
    np.savez(path, x_train=obj(train), y_train=np.array([0, 1, 1, 0]), x_test=obj(test), y_test=np.array([1, 0]))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_prepared_from_real_format(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    truth = make_cifar_archive(raw / cifar10.FILENAME)
    monkeypatch.setattr(cifar10, "CHECKSUM", ("md5", md5(raw / cifar10.FILENAME)))
    prepared = data.prepare("cifar10", CNN, data_dir=tmp_path)
    arrays = cache.open_prepared(prepared.folder)
    assert arrays["x_train"].shape == (30, 3, 32, 32) and arrays["x_train"].dtype == np.float32
    assert arrays["x_test"].shape == (6, 3, 32, 32)
    assert arrays["y_train"].dtype == np.int64
    expected = np.concatenate(truth["train_x"]).reshape(-1, 3, 32, 32).astype(np.float32) / 255
    np.testing.assert_allclose(arrays["x_train"], expected, rtol=0, atol=1e-7)
    assert arrays["y_train"].tolist() == truth["train_y"]
    # the manifest holds the digest of the very bytes workers memory-map
    for name, meta in prepared.manifest["arrays"].items():
        assert meta["sha256"] == cache.array_digest(np.load(prepared.folder / f"{name}.npy"))


def test_cifar10_checksum_mismatch_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_cifar_archive(raw / cifar10.FILENAME)
    with pytest.raises(UsageError, match="checksum mismatch"):
        data.prepare("cifar10", CNN, data_dir=tmp_path)
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_corrupt_archive_leaves_nothing_half_written(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_cifar_archive(raw / cifar10.FILENAME)
    blob = (raw / cifar10.FILENAME).read_bytes()
    (raw / cifar10.FILENAME).write_bytes(blob[: len(blob) // 2])  # truncated download
    monkeypatch.setattr(cifar10, "CHECKSUM", ("md5", md5(raw / cifar10.FILENAME)))
    with pytest.raises(UsageError, match="corrupt CIFAR-10 archive"):
        data.prepare("cifar10", CNN, data_dir=tmp_path)
    prepared = tmp_path / "prepared"
    assert not prepared.exists() or list(prepared.iterdir()) == []


def test_missing_archive_without_network_names_the_fix(tmp_path):
    with pytest.raises(UsageError) as err:
        data.prepare("cifar10", CNN, data_dir=tmp_path)
    text = str(err.value)
    assert cifar10.URL in text and str(tmp_path / "raw" / cifar10.FILENAME) in text and "--data synthetic" in text
    assert not (tmp_path / "raw" / (cifar10.FILENAME + ".part")).exists()


def test_imdb_keras_encoding_and_front_padding(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_imdb_npz(raw / imdb.FILENAME)
    digest = hashlib.sha256((raw / imdb.FILENAME).read_bytes()).hexdigest()
    monkeypatch.setattr(imdb, "CHECKSUM", ("sha256", digest))
    arrays = cache.open_prepared(data.prepare("imdb", RNN, data_dir=tmp_path).folder)
    x, y = arrays["x_train"], arrays["y_train"]
    assert x.shape == (4, RNN.arch.maxlen) and x.dtype == np.int64
    # Keras shuffles each split with seed 113; find the rows by their labels and contents
    rows = {tuple(r[r > 0]) for r in x}
    assert (1, 4, 5, 6) in rows  # start 1, ranks 1,2,3 shifted by 3
    assert (1, 2, 29_999, 8) in rows  # rank 29997 -> 30000 >= vocabulary: out-of-vocabulary 2
    long = next(r for r in x if r[0] != 0)  # the 200-token review fills all 150 slots
    assert long[-1] == 199 + 3 and long[0] == 199 + 3 - 149  # the last 150 tokens are kept
    short = next(r for r in x if (r > 0).sum() == 4 and r[-1] == 6)
    assert (short[:-4] == 0).all()  # padding at the front
    assert sorted(y.tolist()) == [0, 0, 1, 1]


def test_imdb_encode_matches_keras_rules():
    assert imdb.encode([[1, 29_996, 29_997]]) == [[1, 4, 29_999, 2]]
    padded = imdb.pad_front([[5, 6, 7]], maxlen=5)
    assert padded.tolist() == [[0, 0, 5, 6, 7]]


def test_synthetic_is_seeded_prefix_stable_and_learnable(tmp_path):
    small = cache.open_prepared(data.prepare("synthetic", CNN, 256, data_dir=tmp_path).folder)
    big = cache.open_prepared(data.prepare("synthetic", CNN, 2048, data_dir=tmp_path).folder)
    assert small["x_train"].shape == (256, 3, 32, 32) and small["x_train"].dtype == np.float32
    np.testing.assert_array_equal(small["x_train"], big["x_train"][:256])
    np.testing.assert_array_equal(small["y_train"], big["y_train"][:256])
    assert 0 <= big["x_train"].min() and big["x_train"].max() <= 1
    # a nearest-class-mean classifier on raw pixels beats chance: the signal is there
    x, y = big["x_train"].reshape(2048, -1), big["y_train"]
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    xt, yt = big["x_test"].reshape(len(big["x_test"]), -1), big["y_test"]
    pred = ((xt[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yt).mean() > 0.5


def test_synthetic_tokens_shapes(tmp_path):
    arrays = cache.open_prepared(data.prepare("synthetic", RNN, 128, data_dir=tmp_path).folder)
    x = arrays["x_train"]
    assert x.shape == (128, RNN.arch.maxlen) and x.dtype == np.int64
    assert x.min() >= 0 and x.max() < 30_000
    assert (x[:, -1] > 0).all() and (x[:, 0] == 0).any()  # front padding, the last step holds a word


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def good_images(n=80):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


def test_user_npz_is_validated_and_cached(tmp_path):
    x, y = good_images()
    path = write_npz(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    prepared = data.prepare(path, CNN, data_dir=tmp_path / "cache")
    arrays = cache.open_prepared(prepared.folder)
    assert arrays["x_train"].dtype == np.float32
    np.testing.assert_allclose(arrays["x_train"], x.astype(np.float32) / 255, atol=1e-7)


@pytest.mark.parametrize("change, message", [
    ({"x_train": np.zeros((80, 32, 32, 3), np.float32)}, r"shape \(80, 32, 32, 3\).*needs \(N, 3, 32, 32\)"),
    ({"x_train": np.full((80, 3, 32, 32), np.nan, np.float32)}, "NaN"),
    ({"x_train": np.full((80, 3, 32, 32), 2.0, np.float32)}, r"must lie in \[0, 1\]"),
    ({"y_train": np.full(80, 10)}, r"classes 0\.\.9"),
    ({"y_train": np.zeros(79, np.int64)}, r"expected \(80,\)"),
    ({"y_test": np.zeros(10, np.float32)}, "labels must be integers"),
])
def test_user_npz_errors_name_the_problem(tmp_path, change, message):
    x, y = good_images()
    arrays = {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10], **change}
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError, match=message):
        data.prepare(path, CNN, data_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "prepared").exists() or not any((tmp_path / "cache" / "prepared").iterdir())


def test_user_npz_missing_keys_and_tokens_range(tmp_path):
    path = write_npz(tmp_path / "few.npz", x_train=np.zeros((70, 150), np.int64))
    with pytest.raises(UsageError, match="missing arrays y_train, x_test, y_test"):
        data.prepare(path, RNN, data_dir=tmp_path)
    tok = np.full((70, 150), 30_000)
    path = write_npz(tmp_path / "tok.npz", x_train=tok, y_train=np.zeros(70, int), x_test=tok, y_test=np.zeros(70, int))
    with pytest.raises(UsageError, match=r"must lie in \[0, 30000\)"):
        data.prepare(path, RNN, data_dir=tmp_path)


@pytest.mark.parametrize("name, samples, message", [
    ("imdb", None, "model cnn trains on cifar10, not imdb"),
    ("mnist", None, "unknown data 'mnist'; choices: cifar10, imdb, shakespeare, synthetic, a FILE.npz or "
                  "(transformer) a FILE.txt"),
    ("synthetic", 10, "--samples 10 is below the batch size 64"),
    ("nowhere.npz", None, "does not exist"),
])
def test_bad_data_choices(tmp_path, name, samples, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.prepare(name, CNN, samples, data_dir=tmp_path)


def test_samples_beyond_the_data_set(tmp_path):
    x, y = good_images(80)
    path = write_npz(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    with pytest.raises(UsageError, match="--samples 100 exceeds the 80 training examples"):
        data.prepare(path, CNN, 100, data_dir=tmp_path / "cache")


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "env"))
    assert cache.data_dir() == tmp_path / "env"
    assert cache.data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.data_dir() == tmp_path / "xdg" / "dl-rosetta"


def test_synthetic_size_rule():
    assert synthetic.test_size(512, 10_000) == 256
    assert synthetic.test_size(50_000, 10_000) == 10_000


# --------------------------------------------------------------------------- nothing on disk is trusted
def test_verify_hashes_a_file_again_whenever_it_was_written(tmp_path, monkeypatch):
    """The stamp spares the hash of unchanged files only: any write (even one that puts the mtime
    back) changes the file's ctime, and the file is hashed and refused."""
    import os

    prepared = data.prepare("synthetic", CNN, 128, data_dir=tmp_path)
    assert cache.verify(prepared.folder, prepared.manifest) == dict.fromkeys(cache.ARRAY_NAMES, "stamp")
    path = prepared.folder / "x_train.npy"
    st = path.stat()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime says nothing happened
    with pytest.raises(UsageError, match="x_train.npy does not match its manifest"):
        cache.verify(prepared.folder, prepared.manifest)
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))  # the same bytes again: hashed once, then trusted by the stamp
    assert cache.verify(prepared.folder, prepared.manifest)["x_train"] == "hashed"
    assert cache.verify(prepared.folder, prepared.manifest)["x_train"] == "stamp"


def test_the_worker_refuses_bytes_that_changed_after_the_parent_checked(tmp_path):
    prepared = data.prepare("synthetic", CNN, 128, data_dir=tmp_path)
    arrays, seen = cache.open_checked(prepared.folder, prepared.manifest["arrays"], 64)
    assert len(arrays["x_train"]) == 64 and seen == {k: v["sha256"] for k, v in prepared.manifest["arrays"].items()}
    blob = bytearray((prepared.folder / "y_test.npy").read_bytes())
    blob[-1] ^= 0x01
    (prepared.folder / "y_test.npy").write_bytes(bytes(blob))
    with pytest.raises(cache.DataMismatch, match="y_test.npy does not match the manifest"):
        cache.open_checked(prepared.folder, prepared.manifest["arrays"])


def test_prepared_folders_are_as_readable_as_results(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        prepared = data.prepare("synthetic", CNN, 128, data_dir=tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(prepared.folder.stat().st_mode) == 0o755  # what mkdir gives, as the results store has
