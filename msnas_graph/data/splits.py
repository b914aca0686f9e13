"""Cross-validation folds and train/validation/test splits that never split a group.

A *group* is a patient or an examination (:meth:`SegmentationDataset.groups`): near-duplicate
images of one group must stay on one side of every split.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from msnas_graph._util import read_text
from msnas_graph.data.dataset import SegmentationDataset
from msnas_graph.errors import DataError

__all__ = ["group_kfold", "load_folds", "train_val_test_split"]

logger = logging.getLogger(__name__)


def load_folds(path: str | Path) -> dict[str, int]:
    """Read a folds file: ``{"folds": {name: fold}}`` (as HC18's folds.json) or ``{name: fold}``.

    Names are matched against case ids, file names, file stems or groups (see
    :func:`train_val_test_split`).
    """
    path = Path(path)
    missing = f"{path}: folds file not found: give the path of a folds JSON"
    text = read_text(path, DataError, missing=missing)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DataError(
            f'{path}: cannot parse folds file ({exc}): write JSON like {{"folds": {{name: fold}}}}'
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("folds"), dict):
        data = data["folds"]
    if not isinstance(data, dict) or not data:
        raise DataError(
            f"{path}: folds file must map case names to fold numbers, as "
            '{"folds": {"001_HC.png": 0, ...}}'
        )
    folds: dict[str, int] = {}
    for name, fold in data.items():
        if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
            raise DataError(f"{path}: fold of '{name}' is {fold!r}: folds must be integers >= 0")
        folds[str(name)] = fold
    return folds


def group_kfold(groups: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """Assign every case a fold ``0..k-1`` so that no group straddles two folds.

    Groups are placed largest first (ties in a seeded random order) into the fold that holds
    the fewest cases so far (ties to the lowest fold), which balances fold sizes. Deterministic
    for a given ``seed``.

    >>> group_kfold(["a", "a", "b", "c", "d", "d"], k=3)
    [0, 0, 2, 2, 1, 1]
    """
    if k < 2:
        raise DataError(f"k={k}: cross-validation needs at least 2 folds")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    if len(members) < k:
        raise DataError(f"{len(members)} groups cannot fill k={k} folds: use k <= {len(members)}")
    names = sorted(members)
    order = np.random.default_rng(seed).permutation(len(names))
    ranked = sorted(
        (names[j] for j in order), key=lambda g: -len(members[g])
    )  # stable: size desc, seeded order within a size
    sizes = [0] * k
    fold_of = [0] * len(groups)
    for g in ranked:
        f = min(range(k), key=lambda i: (sizes[i], i))
        sizes[f] += len(members[g])
        for i in members[g]:
            fold_of[i] = f
    return fold_of


def _fold_list(dataset: SegmentationDataset, folds: Mapping[str, int] | Sequence[int]) -> list[int]:
    n = len(dataset)
    if isinstance(folds, Mapping):
        out: list[int] = []
        missing: list[str] = []
        for i in range(n):
            fold = next((folds[k] for k in dataset.fold_keys(i) if k in folds), None)
            if fold is None:
                missing.append(dataset.fold_keys(i)[0])
                out.append(-1)
            else:
                out.append(int(fold))
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise DataError(
                f"folds do not cover {len(missing)} of {n} cases ({shown}): add them to the "
                "folds file (keys: case id, file name, stem or group)"
            )
        return out
    fold_list = [int(f) for f in folds]
    if len(fold_list) != n:
        raise DataError(
            f"got {len(fold_list)} folds for {n} cases: give one fold per case, in dataset order"
        )
    return fold_list


def train_val_test_split(
    dataset: SegmentationDataset,
    *,
    test_fold: int | None,
    folds: Mapping[str, int] | Sequence[int] | None,
    val_fraction: float = 0.2,
    seed: int = 0,
    k: int = 5,
) -> tuple[list[int], list[int], list[int]]:
    """Split case indices into train, validation and test, by group.

    ``folds`` is a name -> fold map (:func:`load_folds`), a fold per case, or ``None`` (then
    :func:`group_kfold` with ``k`` folds and ``seed``). Cases of ``test_fold`` form the test
    set (``test_fold=None``: no test set). Of the rest, whole groups drawn in a seeded order
    form the validation set until it holds ``round(val_fraction * rest)`` cases (at least one
    group when ``val_fraction > 0`` and two or more groups remain). Index lists are sorted.

    >>> from msnas_graph.data.phantom import phantom_dataset
    >>> tr, va, te = train_val_test_split(phantom_dataset(10, size=16), test_fold=0, folds=None)
    >>> len(tr), len(va), len(te)
    (6, 2, 2)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction} must lie in [0, 1)")
    groups = dataset.groups()
    n = len(dataset)
    if folds is None and test_fold is not None and len(set(groups)) < k:
        raise DataError(
            f"{dataset.name}: {len(set(groups))} case group(s) cannot fill the {k} default "
            f"cross-validation folds: use at least {k} cases (one group per patient), or give "
            f"a folds file (--folds FOLDS.json)"
        )
    if folds is None:
        fold_of = group_kfold(groups, k, seed) if test_fold is not None else [0] * n
    else:
        fold_of = _fold_list(dataset, folds)
    folds_of_group: dict[str, set[int]] = {}
    for g, f in zip(groups, fold_of, strict=True):
        folds_of_group.setdefault(g, set()).add(f)
    split_groups = {g for g, fs in folds_of_group.items() if len(fs) > 1}
    if split_groups:
        logger.warning(
            "folds split %d groups across folds (e.g. %s): test results may be optimistic",
            len(split_groups),
            sorted(split_groups)[0],
        )
    if test_fold is not None:
        known = sorted(set(fold_of))
        if test_fold not in known:
            raise DataError(
                f"test_fold={test_fold} has no cases (folds: {', '.join(map(str, known))})"
            )
        test = [i for i in range(n) if fold_of[i] == test_fold]
    else:
        test = []
    test_set = set(test)
    rest = [i for i in range(n) if i not in test_set]
    rest_groups = sorted({groups[i] for i in rest})
    target = round(val_fraction * len(rest))
    val_groups: set[str] = set()
    if val_fraction > 0 and len(rest_groups) >= 2:
        target = max(target, 1)
        by_group: dict[str, int] = defaultdict(int)
        for i in rest:
            by_group[groups[i]] += 1
        count = 0
        for j in np.random.default_rng(seed).permutation(len(rest_groups)):
            if count >= target or len(val_groups) == len(rest_groups) - 1:
                break
            g = rest_groups[j]
            val_groups.add(g)
            count += by_group[g]
    val = [i for i in rest if groups[i] in val_groups]
    train = [i for i in rest if groups[i] not in val_groups]
    return train, val, test
