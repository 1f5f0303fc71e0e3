"""Train/validation/test splits by group — the one split function of medtrain.

Samples are never split individually: every sample belongs to a *group* (a patient, a recording session, a
volume) and whole groups go to one split, so that no patient leaks from training into evaluation.

:func:`split_groups` is deterministic for a seed and independent of the order of its input: the unique group
names are sorted, then shuffled with ``numpy.random.default_rng(seed)``. Split sizes come from
largest-remainder rounding of ``ratios``: each split gets ``floor(n * ratio)`` groups and the groups left over
go one each to the splits with the largest fractional remainders (ties go to the split that earlier strata
short-changed most, then to the earlier split in train, val, test order). So 10 groups at 0.7/0.15/0.15 give
7/2/1.

Stratified splits (``strata`` maps each group to a label, e.g. the majority class of a patient) apply that
rounding within each stratum separately, strata taken in sorted label order, so each stratum is spread over
the splits in proportion to the ratios — a stratum with enough groups appears in every split. Split sizes
then differ from the unstratified ones by at most one group per stratum; the tie rule above keeps those
rounding differences from piling up on the same split.

Finally every split with a positive ratio is topped up to ``min_per_split`` groups by moving groups from the
currently largest split (from its most represented stratum). When there are too few groups for that, the
split stays short and a ``UserWarning`` names it. A ratio of zero means an empty split, without warning.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medtrain.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class GroupSplit:
    """Disjoint group names of the train, val and test splits."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    _split_by_group: dict[str, str] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        """Check that no group is listed twice; raise :class:`DataError` naming the group and both lists."""
        lookup: dict[str, str] = {}
        for name in SPLIT_NAMES:
            for group in getattr(self, name):
                if group in lookup:
                    where = f"twice in {name}" if lookup[group] == name else f"in both {lookup[group]} and {name}"
                    raise DataError(f"group {group!r} is listed {where}; each group belongs to one split")
                lookup[group] = name
        object.__setattr__(self, "_split_by_group", lookup)

    def as_dict(self) -> dict[str, list[str]]:
        """Return ``{"train": [...], "val": [...], "test": [...]}`` (JSON-ready)."""
        return {name: list(getattr(self, name)) for name in SPLIT_NAMES}

    def split_of(self, group: str) -> str:
        """Return ``"train"``, ``"val"`` or ``"test"`` for ``group``; :class:`DataError` if it is in none."""
        try:
            return self._split_by_group[group]
        except KeyError:
            raise DataError(f"group {group!r} is in no split{_suggest(group, self._split_by_group)}") from None


def split_groups(
    groups: Iterable[str],
    *,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strata: Mapping[str, str] | None = None,
    min_per_split: int = 1,
) -> GroupSplit:
    """Split the unique ``groups`` into train/val/test by ``ratios`` (see the module docstring for the rules).

    Deterministic for a given ``seed`` and set of groups, whatever their order or repetitions. ``ratios``
    are three non-negative numbers summing to 1 (``ValueError`` otherwise). With ``strata``, every group
    must have a label (:class:`DataError` otherwise) and the split is stratified. Splits with a positive
    ratio get at least ``min_per_split`` groups when there are enough groups, else a ``UserWarning`` names
    them. Raises :class:`DataError` when ``groups`` is empty. Each split's tuple is sorted.
    """
    ratios = _check_ratios(ratios)
    if min_per_split < 0:
        raise ValueError(f"min_per_split must be >= 0, got {min_per_split}")
    unique = sorted(set(groups))
    if not unique:
        raise DataError("no groups to split")
    by_stratum = _group_by_stratum(unique, strata)
    rng = np.random.default_rng(seed)
    assigned: list[list[str]] = [[], [], []]
    shortfall = [0.0, 0.0, 0.0]
    for label in sorted(by_stratum):
        members = by_stratum[label]
        shuffled = [members[i] for i in rng.permutation(len(members))]
        counts = _largest_remainder(len(members), ratios, shortfall)
        start = 0
        for k, count in enumerate(counts):
            assigned[k].extend(shuffled[start : start + count])
            start += count
            shortfall[k] += len(members) * ratios[k] - count
    _ensure_minimum(assigned, ratios, min_per_split, strata)
    return GroupSplit(*(tuple(sorted(part)) for part in assigned))


def manual_split(
    train: Iterable[str],
    val: Iterable[str],
    test: Iterable[str],
    *,
    known: Iterable[str] | None = None,
) -> GroupSplit:
    """Build a split from explicit group lists, kept in the given order.

    Raises :class:`DataError` if a group is listed twice (naming it and both lists), if ``known`` is given
    and a listed group is not in it (naming it, with close matches), or if ``train`` is empty.
    """
    lists = {"train": tuple(train), "val": tuple(val), "test": tuple(test)}
    if known is not None:
        known_set = set(known)
        for name, members in lists.items():
            for group in members:
                if group not in known_set:
                    raise DataError(f"group {group!r} in {name} is not a known group{_suggest(group, known_set)}")
    if not lists["train"]:
        raise DataError("the train split is empty; list at least one group under train")
    return GroupSplit(**lists)


def holdout_split(
    groups: Iterable[str],
    *,
    test_groups: Iterable[str],
    val_ratio: float,
    seed: int,
) -> GroupSplit:
    """Hold out the named ``test_groups`` as test; draw val from the remaining groups by ``val_ratio``.

    The remaining groups are split with :func:`split_groups` (ratios ``1 - val_ratio, val_ratio, 0``), so
    val gets at least one group when ``val_ratio > 0`` and at least two groups remain. Raises
    :class:`DataError` if a test group is not among ``groups`` (with close matches) or no group is left for
    training; ``ValueError`` if ``val_ratio`` is not in ``[0, 1)``.
    """
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    unique = set(groups)
    test = sorted(set(test_groups))
    for group in test:
        if group not in unique:
            raise DataError(f"test group {group!r} is not a known group{_suggest(group, unique)}")
    rest = unique.difference(test)
    if not rest:
        raise DataError(f"all {len(unique)} groups are held out for test; none is left for training")
    inner = split_groups(rest, ratios=(1.0 - val_ratio, val_ratio, 0.0), seed=seed)
    return GroupSplit(train=inner.train, val=inner.val, test=tuple(test))


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Return ``ratios`` as three floats, or raise ``ValueError`` unless they are >= 0 and sum to 1."""
    values = tuple(float(r) for r in ratios)
    if len(values) != 3:
        raise ValueError(f"ratios must have 3 entries (train, val, test), got {len(values)}")
    if not all(math.isfinite(r) and r >= 0.0 for r in values):
        raise ValueError(f"ratios must be finite and >= 0, got {values}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {values} (sum {sum(values):g})")
    return values[0], values[1], values[2]


def _group_by_stratum(unique: list[str], strata: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Map each stratum label to its sorted groups; one unnamed stratum without ``strata``."""
    if strata is None:
        return {"": unique}
    missing = [group for group in unique if group not in strata]
    if missing:
        shown = ", ".join(repr(g) for g in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} group(s) have no stratum label: {shown}")
    by_stratum: dict[str, list[str]] = {}
    for group in unique:
        by_stratum.setdefault(strata[group], []).append(group)
    return by_stratum


def _largest_remainder(total: int, ratios: Sequence[float], shortfall: Sequence[float]) -> list[int]:
    """Apportion ``total`` by ``ratios``; leftovers by remainder, then by larger ``shortfall``, then order."""
    quotas = [total * r for r in ratios]
    counts = [math.floor(q + 1e-9) for q in quotas]
    remainders = [round(q - c, 9) for q, c in zip(quotas, counts, strict=True)]
    eligible = [k for k, r in enumerate(ratios) if r > 0]
    order = sorted(eligible, key=lambda k: (-remainders[k], -round(shortfall[k], 9), k))
    for k in order[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _ensure_minimum(
    assigned: list[list[str]],
    ratios: Sequence[float],
    min_per_split: int,
    strata: Mapping[str, str] | None,
) -> None:
    """Top up positive-ratio splits to ``min_per_split`` groups from the largest split; warn if short."""
    for k, name in enumerate(SPLIT_NAMES):
        if ratios[k] == 0:
            continue
        while len(assigned[k]) < min_per_split:
            donors = [
                j
                for j in range(len(SPLIT_NAMES))
                if j != k and len(assigned[j]) > (min_per_split if ratios[j] > 0 else 0)
            ]
            if not donors:
                break
            donor = max(donors, key=lambda j: len(assigned[j]))
            assigned[k].append(_pop_movable(assigned[donor], strata))
        if len(assigned[k]) < min_per_split:
            state = "is empty" if not assigned[k] else f"has only {len(assigned[k])} group(s)"
            total = sum(len(part) for part in assigned)
            warnings.warn(
                f"{name} split {state} (min_per_split={min_per_split}): {total} groups are too few "
                f"for ratios {tuple(ratios)}",
                UserWarning,
                stacklevel=3,
            )


def _pop_movable(donor: list[str], strata: Mapping[str, str] | None) -> str:
    """Remove and return the last group of ``donor`` that belongs to its most represented stratum."""
    if strata is None:
        return donor.pop()
    counts = Counter(strata[group] for group in donor)
    largest = max(counts.values())
    index = max(i for i, group in enumerate(donor) if counts[strata[group]] == largest)
    return donor.pop(index)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'a', 'b'?"`` for close matches of ``name``, or ``""``."""
    matches = difflib.get_close_matches(name, sorted(candidates), n=3)
    return f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
