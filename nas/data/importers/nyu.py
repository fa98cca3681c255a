"""NYU Depth v2, labeled set: `nyu_depth_v2_labeled.mat` (MATLAB v7.3, an HDF5 file) to the MAI layout.

MATLAB stores arrays column-major, so h5py sees `images` as (N, 3, W, H) uint8 and `depths` as (N, W, H)
float32 metres; a frame is `images[i].transpose(2, 1, 0)` (H, W, 3) and its depth `depths[i].T` (H, W).
Pair i (0-based) is named `nyu_{i+1:05d}`: the 1-based index MATLAB, and the official split, use.

The official split (`splits.mat`: `trainNdxs`, `testNdxs`, 1-based) is used when given, with a seeded
validation part carved from its train part; otherwise a seeded split of the same test share (654 of 1449).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.data.importers.writer import Geometry, ImportPlan, MAX_DEPTH_M, Sample, carve
from nas.errors import ConfigError
from nas.infra.files import sha256_file

OFFICIAL_TEST_SHARE = 654 / 1449
VAL_SHARE = 0.1  # of the training pairs, when --val is not given


def stem(index: int) -> str:
    """The name of pair `index` (0-based): its 1-based MATLAB index, zero-padded so names sort in order."""
    return f"nyu_{index + 1:05d}"


def _open_labeled(mat: Path) -> tuple[int, int, int]:
    """(N, W, H) of a checked labeled set; ConfigError naming the file and what is wrong with it."""
    import h5py

    if not mat.is_file():
        raise ConfigError(mat, "file does not exist")
    if not h5py.is_hdf5(mat):
        raise ConfigError(mat, "not a MATLAB v7.3 (HDF5) file; expected NYU Depth v2's nyu_depth_v2_labeled.mat")
    with h5py.File(mat, "r") as handle:
        for name in ("images", "depths"):
            if not isinstance(handle.get(name), h5py.Dataset):
                raise ConfigError(mat, f"has no dataset {name!r}; expected 'images' and 'depths' as in "
                                       "nyu_depth_v2_labeled.mat")
        images, depths = handle["images"], handle["depths"]
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ConfigError(mat, f"'images' is {images.dtype} {images.shape}; expected uint8 (N, 3, W, H)")
        if depths.ndim != 3 or depths.dtype.kind != "f":
            raise ConfigError(mat, f"'depths' is {depths.dtype} {depths.shape}; expected float metres (N, W, H)")
        if images.shape[0] != depths.shape[0]:
            raise ConfigError(mat, f"'images' holds {images.shape[0]} frames but 'depths' {depths.shape[0]}")
        if images.shape[2:] != depths.shape[1:]:
            raise ConfigError(mat, f"'images' frames are {images.shape[2]}×{images.shape[3]} but 'depths' "
                                   f"{depths.shape[1]}×{depths.shape[2]}")
        if images.shape[0] == 0:
            raise ConfigError(mat, "holds no frames")
        return images.shape[0], images.shape[2], images.shape[3]


def _read_indices(path: Path, total: int) -> tuple[list[int], list[int]]:
    """0-based (train, test) indices of `splits.mat`, MATLAB v5 (scipy) or v7.3 (HDF5)."""
    import h5py
    import scipy.io
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise ConfigError(path, "file does not exist")
    values: dict[str, np.ndarray] = {}
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as handle:
            values = {k: np.asarray(handle[k]) for k in ("trainNdxs", "testNdxs") if isinstance(handle.get(k),
                                                                                               h5py.Dataset)}
    else:
        try:
            content = scipy.io.loadmat(path)
        except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as exc:
            raise ConfigError(path, f"not a MATLAB file ({exc}); expected NYU's splits.mat") from exc
        values = {k: np.asarray(content[k]) for k in ("trainNdxs", "testNdxs") if k in content}
    for key in ("trainNdxs", "testNdxs"):
        if key not in values:
            raise ConfigError(path, f"has no variable {key!r}; expected 'trainNdxs' and 'testNdxs' (1-based)")
    split: dict[str, list[int]] = {}
    for key, array in values.items():
        flat = array.ravel()
        if flat.dtype.kind not in "iuf" or not np.all(np.mod(flat, 1) == 0):
            raise ConfigError(path, f"{key!r} holds non-integer values; expected 1-based indices")
        indices = flat.astype(np.int64)
        if indices.size and (indices.min() < 1 or indices.max() > total):
            raise ConfigError(path, f"{key!r} spans {indices.min()}..{indices.max()}, outside 1..{total} (1-based "
                                    "indices into the labeled set's frames)")
        split[key] = sorted(set((indices - 1).tolist()))
    if overlap := set(split["trainNdxs"]) & set(split["testNdxs"]):
        raise ConfigError(path, f"{len(overlap)} index(es) are in both trainNdxs and testNdxs, e.g. {min(overlap) + 1}")
    return split["trainNdxs"], split["testNdxs"]


def plan_nyu(mat: Path, splits: Path | None = None, val: int | None = None, test: int | None = None,
             seed: int = 0, geometry: Geometry | None = None, max_depth_m: float = MAX_DEPTH_M) -> ImportPlan:
    """The import of the labeled set, checked (ConfigError) before any pixel is read."""
    mat = Path(mat)
    total, width, height = _open_labeled(mat)
    inputs: dict = {"file": str(mat.resolve()), "sha256": sha256_file(mat)}
    notes: list[str] = []
    if splits is not None:
        if test is not None:
            raise ConfigError(None, "--test applies without --splits only: the official split fixes the test part")
        train, tested = _read_indices(Path(splits), total)
        inputs["splits"] = {"file": str(Path(splits).resolve()), "sha256": sha256_file(splits)}
        if left := total - len(train) - len(tested):
            notes.append(f"{left} frame(s) in neither trainNdxs nor testNdxs are left out")
        assigned = {stem(i): "test" for i in tested}
        pool = [stem(i) for i in train]
    else:
        n_test = round(total * OFFICIAL_TEST_SHARE) if test is None else test
        if not 0 <= n_test < total:
            raise ConfigError(mat, f"--test {n_test} leaves no training frame of {total}")
        everything = [stem(i) for i in range(total)]
        assigned = {s: v for s, v in carve(everything, {"test": n_test}, seed, rest="train").items() if v == "test"}
        pool = [s for s in everything if s not in assigned]
    n_val = max(1, round(len(pool) * VAL_SHARE)) if val is None else val
    if not 1 <= n_val < len(pool):
        raise ConfigError(mat, f"--val {n_val} must leave at least one of the {len(pool)} training frame(s) for "
                               "training and take at least one")
    assigned.update(carve(pool, {"validation": n_val}, seed, rest="train"))
    samples = [Sample(stem=name, split=assigned[name], size=(width, height), origin=mat,
                      read=_reader(mat, int(name[4:]) - 1)) for name in sorted(assigned)]
    options = {"splits": "official" if splits else "seeded", "val": n_val, "test": test, "seed": seed}
    return ImportPlan(source="nyu", samples=samples, inputs=inputs, options=options,
                      geometry=geometry or Geometry(), max_depth_m=max_depth_m, notes=notes)


def _reader(mat: Path, index: int):
    """Reads frame `index` from the file when called (one open per frame: simple, and cheap next to the PNGs)."""

    def read() -> tuple[np.ndarray, np.ndarray]:
        import h5py

        with h5py.File(mat, "r") as handle:
            rgb = np.asarray(handle["images"][index]).transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
            depth = np.asarray(handle["depths"][index], dtype=np.float64).T  # (W, H) -> (H, W)
        return rgb, depth

    return read
