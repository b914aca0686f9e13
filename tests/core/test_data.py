"""Data layer: phantom, readers for every layout, transforms, splits, writers, DataErrors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from msnas_graph.data import (
    Case,
    augment,
    group_kfold,
    letterbox_geometry,
    load_dataset,
    load_folds,
    normalize_intensity,
    phantom_dataset,
    preprocess,
    resize_mask,
    resize_pair,
    restore_mask,
    train_val_test_split,
    write_mask,
    write_overlay,
    write_volume_mask,
)
from msnas_graph.errors import DataError

HC18 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hc18"


# ---------------------------------------------------------------------------------------------
# fixtures


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _mask(h: int, w: int, labels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), dtype=np.uint8)
    for lab in range(1, labels):
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 3)
        m[r : r + 3, c : c + 3] = lab
    return m


def _png_pairs(root: Path, n: int = 3, labels: int = 3, rgb: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (12, 10, 3) if rgb else (12, 10)
        _png(root / "images" / f"case{i}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        _png(root / "masks" / f"case{i}.png", _mask(12, 10, labels, i))
    return root


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _affine() -> np.ndarray:
    a = np.diag([0.8, 0.8, 2.5, 1.0])
    a[:3, 3] = [10.0, -5.0, 3.0]
    return a


# ---------------------------------------------------------------------------------------------
# phantom


def test_phantom_is_deterministic_and_labelled() -> None:
    a, b = phantom_dataset(6, size=32, seed=3), phantom_dataset(6, size=32, seed=3)
    for ca, cb in zip(a, b, strict=True):
        assert np.array_equal(ca.image, cb.image) and np.array_equal(ca.mask, cb.mask)
        assert ca.image.dtype == np.float32 and ca.image.shape == (1, 32, 32)
        assert ca.mask is not None and ca.mask.dtype == np.int64
        assert ca.group == ca.case_id
    assert not np.array_equal(a[0].image, phantom_dataset(1, size=32, seed=4)[0].image)
    # case i does not depend on n
    assert np.array_equal(phantom_dataset(2, size=32, seed=3)[1].image, a[1].image)


@pytest.mark.parametrize("num_classes", [2, 4, 8])
def test_phantom_label_count(num_classes: int) -> None:
    ds = phantom_dataset(8, size=64, num_classes=num_classes)
    assert ds.num_classes == num_classes and len(ds.label_names) == num_classes
    seen = set()
    for case in ds:
        assert case.mask is not None
        seen |= set(np.unique(case.mask).tolist())
    assert seen == set(range(num_classes))


def test_phantom_source_strings_and_errors() -> None:
    ds = load_dataset("phantom:5", num_classes=3)
    assert len(ds) == 5 and ds.num_classes == 3 and ds.format == "phantom"
    assert load_dataset("phantom", in_channels=3)[0].image.shape == (3, 64, 64)
    with pytest.raises(DataError, match="positive integer"):
        load_dataset("phantom:abc")
    with pytest.raises(DataError, match="num_classes=12"):
        phantom_dataset(2, num_classes=12)


# ---------------------------------------------------------------------------------------------
# readers


def test_png_pairs(tmp_path: Path) -> None:
    ds = load_dataset(_png_pairs(tmp_path))
    assert (len(ds), ds.num_classes, ds.in_channels, ds.format) == (3, 3, 1, "png")
    assert ds.case_ids() == ["case0", "case1", "case2"] == ds.groups()
    case = ds[1]
    assert case.image.shape == (1, 12, 10) and case.image.dtype == np.float32
    assert case.mask is not None and case.mask.dtype == np.int64
    assert np.array_equal(case.mask, _mask(12, 10, 3, 1))
    assert case.meta["format"] == "png" and case.meta["original_shape"] == (12, 10)
    assert case.pixel_size is None and case.spacing is None
    sub = ds.subset([2, 0])
    assert sub.case_ids() == ["case2", "case0"] and sub[0].case_id == "case2"
    assert ds[1:].case_ids() == ["case1", "case2"]


def test_rgb_and_channel_conversion(tmp_path: Path) -> None:
    root = _png_pairs(tmp_path, rgb=True)
    assert load_dataset(root)[0].image.shape == (3, 12, 10)
    grey = load_dataset(root, in_channels=1)[0].image
    assert grey.shape == (1, 12, 10)
    # mixed grey + RGB -> 3 channels, grey replicated
    _png(root / "images" / "grey.png", np.full((12, 10), 7, np.uint8))
    _png(root / "masks" / "grey.png", _mask(12, 10, 2, 9))
    ds = load_dataset(root)
    case = ds[ds.case_ids().index("grey")]
    assert ds.in_channels == 3 and case.image.shape == (3, 12, 10)
    assert np.all(case.image == 7)


def test_binary_255_masks_become_0_1(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png", np.zeros((8, 8), np.uint8))
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 255
    _png(tmp_path / "labels" / "a_mask.png", m)  # labels/ folder and _mask suffix
    ds = load_dataset(tmp_path)
    assert ds.num_classes == 2
    assert ds[0].mask is not None and set(np.unique(ds[0].mask).tolist()) == {0, 1}


def test_tiff_pairs(tmp_path: Path) -> None:
    import tifffile

    img16 = (np.arange(14 * 9, dtype=np.uint16).reshape(14, 9) * 300).astype(np.uint16)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "t1.tif", img16)
    tifffile.imwrite(tmp_path / "masks" / "t1.tif", _mask(14, 9, 4, 0))
    planar = np.stack([img16, img16 // 2]).astype(np.float32)  # (C, H, W) float TIFF
    tifffile.imwrite(tmp_path / "images" / "t2.tiff", planar)
    tifffile.imwrite(tmp_path / "masks" / "t2.tif", _mask(14, 9, 4, 1))
    with pytest.raises(DataError, match="different channel counts"):
        load_dataset(tmp_path)  # 1-channel t1 vs 2-channel t2 cannot be reconciled
    with pytest.raises(DataError, match="case 't2' has 2 image channel"):
        load_dataset(tmp_path, in_channels=1)  # refused when loaded, not when t2 is read
    (tmp_path / "images" / "t2.tiff").unlink()
    (tmp_path / "masks" / "t2.tif").unlink()
    ds = load_dataset(tmp_path, in_channels=1, num_classes=4)
    assert ds.format == "tiff"
    case = ds[0]
    assert case.image.shape == (1, 14, 9) and float(case.image.max()) == float(img16.max())
    assert np.array_equal(case.mask, _mask(14, 9, 4, 0))
    assert load_dataset(tmp_path).num_classes == 4


def test_jpeg_image_png_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(
        tmp_path / "images" / "p1.jpg", quality=90
    )
    _png(tmp_path / "masks" / "p1_seg.png", _mask(16, 20, 2, 0))
    ds = load_dataset(tmp_path)
    assert ds.format == "jpeg" and ds.in_channels == 3 and ds.num_classes == 2
    case = ds[0]
    assert case.image.shape == (3, 16, 20) and case.meta["format"] == "jpeg"
    out = write_mask(tmp_path / "pred" / "p1.jpg", case.mask, case)
    assert out.suffix == ".png"
    assert np.array_equal(np.asarray(Image.open(out)), case.mask)


def test_nifti_pairs_slicewise_and_write_back(tmp_path: Path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(8, 6, 4)).astype(np.float32)
    lab = np.zeros((8, 6, 4), np.uint8)
    lab[2:5, 1:4, 1:3] = 1
    lab[6, 5, 3] = 2
    _nifti(tmp_path / "images" / "vol_a.nii.gz", vol, _affine())
    _nifti(tmp_path / "masks" / "vol_a.nii.gz", lab, _affine())
    ds = load_dataset(tmp_path)
    assert ds.format == "nifti" and len(ds) == 4 and ds.num_classes == 3
    assert ds.case_ids() == [f"vol_a/z{z:03d}" for z in range(4)]
    assert set(ds.groups()) == {"vol_a"}
    case = ds[2]
    assert case.image.shape == (1, 8, 6) and np.allclose(case.image[0], vol[:, :, 2])
    assert np.array_equal(case.mask, lab[:, :, 2])
    assert case.pixel_size == pytest.approx(0.8) and case.spacing == pytest.approx((0.8, 0.8))
    assert case.meta["slice_index"] == 2 and case.meta["num_slices"] == 4
    assert case.source.endswith("#z=2")

    out = write_mask(tmp_path / "pred" / "vol_a_z2", case.mask, case)
    assert out.name.endswith(".nii.gz")
    written = nib.load(str(out))
    assert written.shape == (8, 6, 1)
    assert np.array_equal(np.asarray(written.dataobj)[:, :, 0], lab[:, :, 2])
    # the slice file sits where slice 2 of the source sits
    assert np.allclose(written.affine @ [0, 0, 0, 1], _affine() @ [0, 0, 2, 1])

    slices = [ds[z].mask for z in range(4)]
    full = write_volume_mask(tmp_path / "pred" / "vol_a.nii", slices, case)
    back = nib.load(str(full))
    assert np.array_equal(np.asarray(back.dataobj), lab) and np.allclose(back.affine, _affine())
    with pytest.raises(DataError, match="3 slice masks"):
        write_volume_mask(tmp_path / "x.nii.gz", slices[:3], case)


def test_msd_v1_layout_4d_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("brain_001", "brain_002"):
        _nifti(
            tmp_path / "imagesTr" / f"{name}.nii.gz",
            rng.normal(size=(6, 5, 3, 2)).astype(np.float32),
        )
        lab = np.zeros((6, 5, 3), np.uint8)
        lab[1:3, 1:3, :] = 2
        _nifti(tmp_path / "labelsTr" / f"{name}.nii.gz", lab)
    (tmp_path / "imagesTr" / "._brain_001.nii.gz").write_bytes(b"macos junk")
    spec = {
        "name": "BrainTumour",
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "modality": {"0": "FLAIR", "1": "T1w"},
        "training": [
            {"image": "./imagesTr/brain_001.nii.gz", "label": "./labelsTr/brain_001.nii.gz"},
            {"image": "./imagesTr/brain_002.nii.gz", "label": "./labelsTr/brain_002.nii.gz"},
        ],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    ds = load_dataset(tmp_path)
    assert ds.name == "BrainTumour" and ds.label_names == ["background", "edema", "tumour"]
    assert (ds.num_classes, ds.in_channels, len(ds)) == (3, 2, 6)
    assert ds[4].image.shape == (2, 6, 5) and ds[4].group == "brain_002"
    with pytest.raises(DataError, match="num_classes=5"):
        load_dataset(tmp_path, num_classes=5)


def test_nnunet_v2_layout_channel_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("liver_003", "liver_007"):
        for c in range(2):
            _nifti(
                tmp_path / "imagesTr" / f"{name}_{c:04d}.nii.gz",
                (rng.normal(size=(5, 4, 2)) + 10 * c).astype(np.float32),
            )
        _nifti(tmp_path / "labelsTr" / f"{name}.nii.gz", np.ones((5, 4, 2), np.uint8))
    spec = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "liver": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    ds = load_dataset(tmp_path)
    assert ds.case_ids() == ["liver_003/z000", "liver_003/z001", "liver_007/z000", "liver_007/z001"]
    assert ds.groups() == ["liver_003", "liver_003", "liver_007", "liver_007"]
    case = ds[1]
    assert case.image.shape == (2, 5, 4) and case.image[1].mean() > case.image[0].mean() + 5
    assert ds.label_names == ["background", "liver"] and ds.in_channels == 2


def test_nnunet_v2_single_channel_png(tmp_path: Path) -> None:
    for i in range(2):
        _png(tmp_path / "imagesTr" / f"us_{i:03d}_0000.png", np.full((6, 7), 9, np.uint8))
        _png(tmp_path / "labelsTr" / f"us_{i:03d}.png", _mask(6, 7, 2, i))
    spec = {"channel_names": {"0": "US"}, "labels": {"background": 0, "head": 1}}
    spec["file_ending"] = ".png"
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    ds = load_dataset(tmp_path)
    assert ds.case_ids() == ["us_000", "us_001"] and ds.format == "png"
    assert ds[0].image.shape == (1, 6, 7) and ds.label_names == ["background", "head"]


def test_unlabelled_inputs(tmp_path: Path) -> None:
    _png(tmp_path / "flat" / "x.png", np.zeros((6, 6), np.uint8))
    ds = load_dataset(tmp_path / "flat")
    assert not ds.labelled and ds[0].mask is None and ds.num_classes == 2
    single = load_dataset(tmp_path / "flat" / "x.png", num_classes=4)
    assert len(single) == 1 and single.num_classes == 4


@pytest.mark.skipif(not HC18.is_dir(), reason="shared HC18 data absent")
def test_hc18_cases_groups_pixel_size_and_folds() -> None:
    import csv

    ds = load_dataset(HC18)
    assert ds.num_classes == 2 and ds.in_channels == 1 and len(ds) == 999
    ids = ds.case_ids()
    a, b = ids.index("010_HC"), ids.index("010_2HC")
    assert ds.groups()[a] == ds.groups()[b] == "010"
    with (HC18 / "pixel_size_and_hc.csv").open() as fh:
        sizes = {r["filename"]: float(r["pixel size(mm)"]) for r in csv.DictReader(fh)}
    for i in (a, b, 0):
        case = ds[i]
        assert case.pixel_size == pytest.approx(sizes[case.meta["file_name"]])
        assert case.mask is not None and set(np.unique(case.mask).tolist()) <= {0, 1}
        assert case.image.shape[1:] == case.mask.shape
    folds = load_folds(HC18 / "folds.json")
    tr, va, te = train_val_test_split(ds, test_fold=0, folds=folds)
    assert sorted(tr + va + te) == list(range(len(ds)))
    assert all(folds[ds[i].meta["file_name"]] == 0 for i in te[:5])
    groups = ds.groups()
    sets = [{groups[i] for i in part} for part in (tr, va, te)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


# ---------------------------------------------------------------------------------------------
# transforms


@pytest.mark.parametrize("mode", ["resize", "pad"])
def test_resize_pair_shapes(mode: str) -> None:
    img = np.random.default_rng(0).normal(size=(2, 30, 50)).astype(np.float32)
    m = _mask(30, 50, 4, 0).astype(np.int64)
    out, om = resize_pair(img, m, 24, mode)  # type: ignore[arg-type]
    assert out.shape == (2, 24, 24) and out.dtype == np.float32
    assert om is not None and om.shape == (24, 24)
    out, om = resize_pair(img, None, (16, 40), mode)  # type: ignore[arg-type]
    assert out.shape == (2, 16, 40) and om is None


def test_pad_letterbox_geometry_and_fill() -> None:
    img = np.ones((1, 10, 20), np.float32)
    img[0, 0, 0] = -3.0
    m = np.ones((10, 20), np.int64)
    out, om = resize_pair(img, m, 20, "pad")
    nh, nw, top, left = letterbox_geometry((10, 20), 20)
    assert (nh, nw, top, left) == (10, 20, 5, 0)
    assert om is not None and om[:top].sum() == 0 and om[top : top + nh].all()
    assert np.all(out[0, :top] == -3.0)  # padded with the channel minimum


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(2, 24),
    w=st.integers(2, 24),
    s=st.integers(2, 40),
    labels=st.integers(2, 6),
    mode=st.sampled_from(["resize", "pad"]),
    seed=st.integers(0, 1000),
)
def test_resize_keeps_only_input_labels(h, w, s, labels, mode, seed) -> None:  # type: ignore[no-untyped-def]
    m = np.random.default_rng(seed).integers(0, labels, (h, w))
    _, om = resize_pair(np.zeros((1, h, w), np.float32), m, s, mode)
    assert om is not None
    assert set(np.unique(om).tolist()) <= set(np.unique(m).tolist()) | {0}


@pytest.mark.parametrize("mode", ["resize", "pad"])
def test_restore_mask_inverts_integer_upscaling(mode: str) -> None:
    m = _mask(8, 8, 4, 3).astype(np.int64)
    case = Case("c", np.zeros((1, 8, 8), np.float32), m, "c", None, "mem", {})
    _, small = preprocess(case, 32, mode)  # type: ignore[arg-type]
    assert small is not None
    assert np.array_equal(restore_mask(small, case, mode), m)  # type: ignore[arg-type]
    wide = Case("w", np.zeros((1, 4, 8), np.float32), None, "w", None, "mem", {})
    assert restore_mask(np.zeros((16, 16), np.int64), wide, "pad").shape == (4, 8)
    assert resize_mask(m, (8, 8)) is not None


def test_normalize_intensity() -> None:
    x = np.random.default_rng(0).normal(5, 3, size=(2, 16, 16)).astype(np.float32)
    x[1] = 4.0
    y = normalize_intensity(x)
    assert y.dtype == np.float32
    assert abs(float(y[0].mean())) < 1e-5 and abs(float(y[0].std()) - 1) < 1e-4
    assert np.all(y[1] == 0)


def test_augment_deterministic_and_label_safe() -> None:
    case = phantom_dataset(1, size=32)[0]
    img, m = preprocess(case, 32)
    assert m is not None
    before = img.copy()
    a = augment(img, m, np.random.default_rng(5))
    b = augment(img, m, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # type: ignore[arg-type]
    assert np.array_equal(img, before)
    assert a[0].shape == img.shape and a[0].dtype == np.float32
    assert a[1] is not None and a[1].shape == m.shape
    assert set(np.unique(a[1]).tolist()) <= set(np.unique(m).tolist())
    out, none = augment(img, None, np.random.default_rng(0))
    assert none is None and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# splits


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=3, max_size=25),
    k=st.integers(2, 5),
    seed=st.integers(0, 100),
)
def test_group_kfold_never_splits_a_group(sizes: list[int], k: int, seed: int) -> None:
    groups = [f"g{j}" for j, n in enumerate(sizes) for _ in range(n)]
    rng = np.random.default_rng(seed)
    groups = [groups[i] for i in rng.permutation(len(groups))]
    if len(sizes) < k:
        with pytest.raises(DataError):
            group_kfold(groups, k, seed)
        return
    folds = group_kfold(groups, k, seed)
    assert folds == group_kfold(groups, k, seed)
    by_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds, strict=True):
        by_group.setdefault(g, set()).add(f)
    assert all(len(v) == 1 for v in by_group.values())
    counts = np.bincount(folds, minlength=k)
    assert set(folds) <= set(range(k)) and counts.min() > 0
    assert counts.max() - counts.min() <= max(sizes)  # greedy balance bound


def test_train_val_test_split_by_group() -> None:
    ds = phantom_dataset(12, size=16)
    folds = group_kfold(ds.groups(), 3)
    tr, va, te = train_val_test_split(ds, test_fold=1, folds=folds, val_fraction=0.25, seed=2)
    assert sorted(tr + va + te) == list(range(12))
    assert te == [i for i in range(12) if folds[i] == 1] and len(va) == 2
    assert train_val_test_split(ds, test_fold=1, folds=folds, seed=2) == train_val_test_split(
        ds, test_fold=1, folds=folds, seed=2
    )
    tr, va, te = train_val_test_split(ds, test_fold=None, folds=None, val_fraction=0.0)
    assert (len(tr), va, te) == (12, [], [])
    with pytest.raises(DataError, match="test_fold=7"):
        train_val_test_split(ds, test_fold=7, folds=folds)
    with pytest.raises(DataError, match="one fold per case"):
        train_val_test_split(ds, test_fold=0, folds=[0, 1])


def test_folds_files(tmp_path: Path) -> None:
    ds = load_dataset(_png_pairs(tmp_path / "d", n=4))
    wrapped = tmp_path / "folds.json"
    wrapped.write_text(
        json.dumps({"description": "x", "folds": {f"case{i}.png": i % 2 for i in range(4)}})
    )
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({f"case{i}": i % 2 for i in range(4)}))
    assert load_folds(wrapped) == {f"case{i}.png": i % 2 for i in range(4)}
    for path in (wrapped, plain):
        _, _, te = train_val_test_split(ds, test_fold=1, folds=load_folds(path))
        assert te == [1, 3]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: cannot parse"):
        load_folds(bad)
    bad.write_text(json.dumps({"a": "one"}))
    with pytest.raises(DataError, match="integers"):
        load_folds(bad)
    with pytest.raises(DataError, match="not found"):
        load_folds(tmp_path / "nope.json")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"case0": 0, "case1": 1}))
    with pytest.raises(DataError, match=r"do not cover 2 of 4 cases \(case2, case3\)"):
        train_val_test_split(ds, test_fold=0, folds=load_folds(partial))


# ---------------------------------------------------------------------------------------------
# writers


def test_write_mask_png_and_overlay(tmp_path: Path) -> None:
    case = phantom_dataset(1, size=32)[0]
    assert case.mask is not None
    out = write_mask(tmp_path / "m", case.mask, case)
    assert out.name == "m.png" and np.array_equal(np.asarray(Image.open(out)), case.mask)
    with pytest.raises(DataError, match="restore_mask"):
        write_mask(tmp_path / "m2.png", np.zeros((8, 8), np.int64), case)
    ov = write_overlay(tmp_path / "ov.png", case.image, case.mask)
    im = Image.open(ov)
    assert im.size == (32, 32) and im.mode == "RGB"
    rgb = write_overlay(tmp_path / "ov3.png", np.zeros((3, 4, 5)), np.ones((4, 5), int))
    assert Image.open(rgb).size == (5, 4)


# ---------------------------------------------------------------------------------------------
# errors


def test_error_missing_empty_and_no_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path / "txt")
    (tmp_path / "imgs" / "images").mkdir(parents=True)
    (tmp_path / "imgs" / "images" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="images: no images found"):
        load_dataset(tmp_path / "imgs")
    (tmp_path / "tr" / "imagesTr").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no dataset\.json"):
        load_dataset(tmp_path / "tr")


def test_error_unmatched_stems(tmp_path: Path) -> None:
    root = _png_pairs(tmp_path, n=3)
    (root / "masks" / "case2.png").rename(root / "masks" / "other.png")
    with pytest.raises(DataError) as err:
        load_dataset(root)
    msg = str(err.value)
    assert "3 images and 3 masks" in msg and "no mask for case2.png" in msg
    assert "no image for other.png" in msg and "\n" not in msg
    (root / "masks" / "other.png").unlink()
    with pytest.raises(DataError, match=r"3 images and 2 masks; no mask for case2\.png"):
        load_dataset(root)


def test_error_size_mismatch(tmp_path: Path) -> None:
    root = _png_pairs(tmp_path, n=2)
    _png(root / "masks" / "case1.png", np.zeros((11, 10), np.uint8))
    with pytest.raises(
        DataError, match=r"case1.png: mask size \(11, 10\) differs from image size \(12, 10\)"
    ):
        load_dataset(root)


def test_error_labels_out_of_range(tmp_path: Path) -> None:
    root = _png_pairs(tmp_path, n=2, labels=4)
    ds = load_dataset(root, num_classes=2)
    with pytest.raises(DataError, match=r"case0.png: mask labels 2, 3 outside 0..1.*num_classes=4"):
        ds[0]
    with pytest.raises(DataError, match="outside"):
        ds.validate()
    assert load_dataset(root).num_classes == 4


def test_error_corrupt_files(tmp_path: Path) -> None:
    root = _png_pairs(tmp_path, n=2)
    (root / "images" / "case1.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"case1.png: cannot read"):
        load_dataset(root)
    (tmp_path / "v" / "images").mkdir(parents=True)
    (tmp_path / "v" / "images" / "x.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"x.nii.gz: cannot read"):
        load_dataset(tmp_path / "v")


def test_error_colour_mask(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png", np.zeros((6, 6), np.uint8))
    colour = np.zeros((6, 6, 3), np.uint8)
    colour[1, 1] = (255, 0, 0)
    _png(tmp_path / "masks" / "a.png", colour)
    with pytest.raises(DataError, match=r"a\.png: colour-coded mask"):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{oops", "cannot parse"),
        ("[1, 2]", "JSON object"),
        ('{"name": "x"}', "no 'labels'"),
        ('{"labels": {"background": 0, "tumour": [1, 2]}}', "region-based"),
        ('{"labels": {"0": "bg", "1": "a"}, "modality": []}', "non-empty mapping"),
        ('{"labels": {"0": "bg", "1": "a"}, "training": [{"image": "x"}]}', r"training\[0\]"),
    ],
)
def test_error_malformed_dataset_json(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(tmp_path)
    assert "dataset.json" in str(err.value)


def test_error_msd_missing_image(tmp_path: Path) -> None:
    _nifti(tmp_path / "labelsTr" / "c1.nii.gz", np.zeros((3, 3, 2), np.uint8))
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}}))
    with pytest.raises(DataError, match="no image for case 'c1'"):
        load_dataset(tmp_path)
