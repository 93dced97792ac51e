"""Tests of ``PixelMetrics``: streaming pixel metrics equal the all-in-memory computation.

The oracles are the scikit-learn based ``auroc``, ``average_precision`` and ``f1_max`` on the
concatenated pixels and, for AUPRO, the former all-in-memory implementation (sort every pixel,
cumulative sums, one point per distinct score), kept here verbatim in ``_aupro_in_memory``.
Tiny budgets force many chunks, bucket splits and tie groups larger than the budget; the
chunks' pixels are then spilled to temporary files in one pass, which must change nothing
(bit for bit against one pass per chunk), cost no more passes as the chunks multiply, and
leave no file behind, whatever happens.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import ndimage

import scenarios.metrics as metrics_module
from scenarios.metrics import PixelMetrics, auroc, average_precision, compute_metrics, f1_max
from scenarios.rundir import TEMP_PREFIX

Images = list[tuple[NDArray[np.bool_], NDArray]]  # (gt_mask (H, W) bool, anomaly_map (H, W))
KEYS = ("p_auroc", "p_ap", "p_f1max", "aupro")


def _aupro_in_memory(
    masks: Sequence[NDArray[np.bool_]], maps: Sequence[NDArray], fpr_limit: float = 0.3
) -> float:
    """The former ``aupro``: all pixels sorted at once (no cutoff speed-up), as an oracle."""
    pro_weights, num_regions = [], 0
    for mask in masks:
        regions, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        regions = np.asarray(regions).ravel()
        sizes = np.bincount(regions, minlength=n + 1).astype(np.float64)
        inv_size = np.zeros(n + 1)
        inv_size[1:] = 1.0 / sizes[1:]
        pro_weights.append(inv_size[regions])
        num_regions += int(n)
    normal = ~np.concatenate([m.ravel() for m in masks])
    num_normal = int(np.count_nonzero(normal))
    if num_regions == 0 or num_normal == 0:
        return float("nan")
    scores = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in maps])
    weights = np.concatenate(pro_weights)
    order = np.argsort(-scores)
    sorted_scores = scores[order]
    fprs = np.cumsum(normal[order], dtype=np.int64) / num_normal
    pros = np.cumsum(weights[order]) / num_regions
    keep = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fprs = np.concatenate(([0.0], fprs[keep]))
    pros = np.concatenate(([0.0], pros[keep]))
    end = int(np.searchsorted(fprs, fpr_limit, side="right"))
    x, y = fprs[:end], pros[:end]
    if x[-1] < fpr_limit:
        x0, x1, y0, y1 = fprs[end - 1], fprs[end], pros[end - 1], pros[end]
        x = np.append(x, fpr_limit)
        y = np.append(y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5)) / fpr_limit


def _oracle(images: Images, fpr_limit: float = 0.3) -> dict[str, float]:
    """The four pixel metrics of all pixels concatenated, computed all in memory."""
    labels = np.concatenate([m.ravel() for m, _ in images])
    scores = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for _, a in images])
    return {
        "p_auroc": auroc(labels, scores),
        "p_ap": average_precision(labels, scores),
        "p_f1max": f1_max(labels, scores),
        "aupro": _aupro_in_memory([m for m, _ in images], [a for _, a in images], fpr_limit),
    }


class _Source:
    """A re-readable image source that counts its passes (the engine re-reads .npy files).

    ``fail_at`` (pass, image) raises ``error`` instead of yielding that image of that pass.
    """

    def __init__(
        self,
        images: Images,
        fail_at: tuple[int, int] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.images = images
        self.passes = 0
        self.fail_at = fail_at
        self.error = error

    def __call__(self) -> Iterator[tuple[NDArray[np.bool_], NDArray]]:
        self.passes += 1
        return self._iterate(self.passes)

    def _iterate(self, n_pass: int) -> Iterator[tuple[NDArray[np.bool_], NDArray]]:
        for i, (m, a) in enumerate(self.images):
            if self.fail_at == (n_pass, i):
                assert self.error is not None
                raise self.error
            # Fresh copies, as a load from disk would give: nothing may rely on identity.
            yield m.copy(), a.copy()


def _filled(images: Images, budget_px: int, **kwargs: object) -> PixelMetrics:
    """A ``PixelMetrics`` fed ``images`` one by one."""
    metrics = PixelMetrics(budget_px=budget_px, **kwargs)  # type: ignore[arg-type]
    for mask, amap in images:
        metrics.add(mask, amap)
    return metrics


def _streamed(
    images: Images, budget_px: int = 16_000_000, fpr_limit: float = 0.3
) -> tuple[dict[str, float], int]:
    """(metrics, number of re-read passes) of ``PixelMetrics`` fed ``images`` one by one."""
    metrics = _filled(images, budget_px, fpr_limit=fpr_limit)
    source = _Source(images)
    return metrics.result(reread=source), source.passes


def _plan(metrics: PixelMetrics, images: Images) -> tuple[int, list[metrics_module._Chunk]]:
    """(split levels, chunks) that ``result`` goes through, computed as it does."""
    read = metrics._pass_source(_Source(images))
    buckets = metrics._top.buckets()
    levels = 0
    while True:
        big = np.flatnonzero((buckets.count > metrics.budget_px) & (buckets.kmin != buckets.kmax))
        if big.size == 0:
            return levels, list(metrics._chunks(buckets))
        buckets = metrics._split(buckets, big, read)
        levels += 1


def _one_pass_per_chunk(metrics: PixelMetrics, images: Images) -> dict[str, float]:
    """The former ``result``: every chunk read by its own pass over the images, no files."""
    n_neg = metrics.n_pixels - metrics.n_anomalous
    if metrics.n_anomalous == 0 or n_neg == 0:
        return dict.fromkeys(KEYS, math.nan)
    read = metrics._pass_source(_Source(images))
    _, chunks = _plan(metrics, images)
    sums = metrics_module._CurveSums(
        metrics.n_anomalous, n_neg, metrics.n_regions, metrics.fpr_limit
    )

    def load(i: int, labelled: bool) -> metrics_module._ChunkPixels:
        return metrics._read(chunks[i], read, labelled)

    metrics._accumulate(sums, chunks, load)
    return sums.result()


def _temporaries(folder: Path) -> list[str]:
    return sorted(e for e in os.listdir(folder) if e.startswith(TEMP_PREFIX))


def _assert_close(got: dict[str, float], expected: dict[str, float]) -> None:
    assert tuple(got) == KEYS
    for key in KEYS:
        if math.isnan(expected[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-9), key


# Score pools: few values (many ties, both zeros, negatives), values one ulp apart (deep
# bucket splits), or continuous values exactly representable in float32.
_POOLS = [
    [0.0, 0.25, 0.5, 1.0, 2.0],
    [0.0, -0.0, -1.5, 3.0],
    [1.0, float(np.nextafter(1.0, 2.0)), float(np.nextafter(np.float32(1.0), np.float32(2.0)))],
    [0.0, 1e-30, 1e-20, 7.0, 1e30],
]


@st.composite
def _image_sets(draw: st.DrawFn) -> Images:
    """1-4 images of sizes 1x1 to 7x7 with random masks (sometimes empty or full)."""
    dtype = np.float32 if draw(st.booleans()) else np.float64
    pool = draw(st.sampled_from([*range(len(_POOLS)), None]))
    if pool is None:
        elements = st.floats(-100.0, 100.0, width=32)
    else:
        elements = st.sampled_from([float(dtype(v)) for v in _POOLS[pool]])
    images = []
    for _ in range(draw(st.integers(1, 4))):
        shape = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
        kind = draw(st.sampled_from(["random", "random", "random", "empty", "full"]))
        if kind == "random":
            mask = draw(hnp.arrays(np.bool_, shape))
        else:
            mask = np.full(shape, kind == "full")
        images.append((mask, draw(hnp.arrays(dtype, shape, elements=elements))))
    return images


@settings(max_examples=150, deadline=None)
@given(
    images=_image_sets(),
    budget_px=st.sampled_from([1, 2, 7, 50, 16_000_000]),
    fpr_limit=st.sampled_from([0.05, 0.3, 1.0]),
)
def test_streaming_equals_in_memory(images: Images, budget_px: int, fpr_limit: float) -> None:
    got, passes = _streamed(images, budget_px, fpr_limit)
    _assert_close(got, _oracle(images, fpr_limit))
    n_pixels = sum(m.size for m, _ in images)
    if n_pixels <= budget_px:
        assert passes == 0  # the kept copies serve the only pass


@settings(max_examples=60, deadline=None)
@given(images=_image_sets())
def test_within_budget_is_bit_identical_to_sklearn(images: Images) -> None:
    # One chunk holds every threshold, and the arithmetic mirrors scikit-learn's.
    got, _ = _streamed(images)
    expected = _oracle(images)
    for key in ("p_auroc", "p_ap", "p_f1max"):
        assert got[key] == expected[key] or (math.isnan(got[key]) and math.isnan(expected[key]))


def _realistic_images(seed: int, n: int, size: int, zero_fraction: float = 0.7) -> Images:
    """Maps with exact-zero background, smooth-ish values elsewhere, blob defects on half."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        mask = np.zeros((size, size), dtype=bool)
        if i % 2:
            r, c = rng.integers(0, size - 4, 2)
            mask[r : r + 4, c : c + 3] = True
            mask[r + 4, c + 3] = True  # touches diagonally: same 8-connected region
        amap = rng.random((size, size)).astype(np.float32) + 0.5 * mask
        amap[(rng.random((size, size)) < zero_fraction) & ~mask] = 0.0
        images.append((mask, amap))
    return images


def test_tie_group_larger_than_budget() -> None:
    # 6 images of 16x16: ~1000 exact zeros, one tie group 20x the budget of 50 pixels.
    images = _realistic_images(seed=1, n=6, size=16)
    n_zeros = sum(int(np.count_nonzero(a == 0)) for _, a in images)
    assert n_zeros > 20 * 50
    got, _ = _streamed(images, budget_px=50)
    _assert_close(got, _oracle(images))
    # The zeros form one count-only chunk; every other chunk reads at most 50 pixels.
    metrics = _filled(images, 50)
    _, chunks = _plan(metrics, images)
    ties = [c for c in chunks if c.tie]
    assert [c.count for c in ties] == [n_zeros]
    assert all(c.count <= 50 for c in chunks if not c.tie)
    assert sum(c.count for c in chunks) == sum(m.size for m, _ in images)
    # Only the other pixels are spilled: 8 bytes per normal one, 12 per anomalous one.
    assert metrics.result(reread=_Source(images)) == got
    n_anomalous = sum(int(m.sum()) for m, _ in images)
    assert metrics.spilled_bytes == 8 * (sum(m.size for m, _ in images) - n_zeros) + 4 * (
        n_anomalous
    )


def test_budget_independent_and_bounded_rereads() -> None:
    images = _realistic_images(seed=2, n=8, size=20)
    n_pixels = sum(m.size for m, _ in images)  # 3200
    expected = _oracle(images)
    baseline, passes = _streamed(images)
    assert passes == 0
    for key in ("p_auroc", "p_ap", "p_f1max"):
        assert baseline[key] == expected[key]
    n_chunks = []
    for budget in (n_pixels, n_pixels - 1, 1000, 333, 64, 9, 1):
        got, passes = _streamed(images, budget_px=budget)
        _assert_close(got, baseline)
        if budget >= n_pixels:
            assert passes == 0
            continue
        # The split levels (<= 6), then one pass for the pixels of all chunks together.
        levels, chunks = _plan(_filled(images, budget), images)
        n_chunks.append(sum(not c.tie for c in chunks))
        assert passes == levels + 1 <= 7, (budget, passes)
    assert n_chunks[-1] > 900  # budget 1: one chunk per distinct non-zero score


@settings(max_examples=60, deadline=None)
@given(images=_image_sets(), budget_px=st.sampled_from([1, 2, 7, 50]))
def test_spilling_is_bit_identical_to_one_pass_per_chunk(images: Images, budget_px: int) -> None:
    metrics = _filled(images, budget_px)
    got = metrics.result(reread=_Source(images))
    expected = _one_pass_per_chunk(metrics, images)
    assert tuple(got) == KEYS
    for key in KEYS:
        assert got[key] == expected[key] or (math.isnan(got[key]) and math.isnan(expected[key]))


def test_spill_files_in_spill_dir_then_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _realistic_images(seed=7, n=6, size=24)
    n_pixels = sum(m.size for m, _ in images)
    seen: list[list[str]] = []

    def reread() -> Iterator[tuple[NDArray[np.bool_], NDArray]]:
        seen.append(_temporaries(tmp_path))
        return iter(images)

    metrics = _filled(images, n_pixels // 10, spill_dir=tmp_path)
    got = metrics.result(reread=reread)
    _assert_close(got, _oracle(images))
    assert len(seen) >= 1 and len(seen) <= 7
    # The spill pass is the last: its directory exists then, and only then.
    assert all(s == [] for s in seen[:-1])
    assert len(seen[-1]) == 1 and seen[-1][0].startswith(TEMP_PREFIX + "metrics.")
    assert metrics.spilled_bytes > 0
    assert _temporaries(tmp_path) == [] and os.listdir(tmp_path) == []

    # spill_dir=None: the system's temporary directory.
    system_tmp = tmp_path / "system"
    system_tmp.mkdir()
    with monkeypatch.context() as m:
        m.setattr(tempfile, "tempdir", str(system_tmp))
        made: list[str] = []
        mkdtemp = tempfile.mkdtemp

        def spy(*args: object, **kwargs: object) -> str:
            made.append(mkdtemp(*args, **kwargs))  # type: ignore[call-overload]
            return made[-1]

        m.setattr(tempfile, "mkdtemp", spy)
        assert _filled(images, n_pixels // 10).result(reread=_Source(images)) == got
    assert len(made) == 1 and Path(made[0]).parent == system_tmp
    assert os.listdir(system_tmp) == []

    # Within the budget, or with one chunk of pixels to sort (the zeros, ~70%, are one tie
    # group over the budget): no file (spill_dir is missing).
    missing = tmp_path / "missing"
    for budget in (n_pixels, n_pixels // 2):
        metrics = _filled(images, budget, spill_dir=missing)
        assert sum(not c.tie for c in _plan(metrics, images)[1]) == 1
        _assert_close(metrics.result(reread=_Source(images)), got)
        assert metrics.spilled_bytes == 0
    assert not missing.exists()


@pytest.mark.parametrize(
    ("fail_at", "error"),
    [
        ((1, 3), OSError("disk gone")),  # during the spill pass (no split here)
        ((1, 5), KeyboardInterrupt()),  # at its last image
        (None, None),  # while the spilled chunks are sorted: see below
    ],
)
def test_spill_dir_removed_on_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail_at: tuple[int, int] | None,
    error: BaseException | None,
) -> None:
    images = _realistic_images(seed=8, n=6, size=24)
    metrics = _filled(images, 200, spill_dir=tmp_path)
    levels, chunks = _plan(metrics, images)
    assert levels == 0 and sum(not c.tie for c in chunks) > 2
    source = _Source(images, fail_at, error)
    if error is None:
        update = metrics_module._CurveSums.update
        calls = []

        def failing(self: metrics_module._CurveSums, *args: object) -> None:
            calls.append(_temporaries(tmp_path))
            if len(calls) == 3:
                raise MemoryError("while sorting")
            update(self, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(metrics_module._CurveSums, "update", failing)
        error = MemoryError("while sorting")
    with pytest.raises(type(error), match=str(error) or None):
        metrics.result(reread=source)
    if fail_at is None:
        assert len(calls[-1]) == 1  # the files existed while the chunks were processed
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    # The object is still usable afterwards.
    _assert_close(metrics.result(reread=_Source(images)), _oracle(images))


def test_over_budget_without_reread_raises() -> None:
    images = _realistic_images(seed=3, n=3, size=10)
    metrics = PixelMetrics(budget_px=250)
    for mask, amap in images[:2]:
        metrics.add(mask, amap)
    _assert_close(metrics.result(), _oracle(images[:2]))  # 200 px kept: no reread needed
    metrics.add(*images[2])
    with pytest.raises(ValueError, match="exceed budget_px=250.*pass reread"):
        metrics.result()
    _assert_close(metrics.result(reread=_Source(images)), _oracle(images))


def test_float32_maps_equal_their_float64_values() -> None:
    images = _realistic_images(seed=4, n=4, size=12)
    as64 = [(m, a.astype(np.float64)) for m, a in images]
    for budget in (16_000_000, 40):
        assert _streamed(images, budget)[0] == _streamed(as64, budget)[0]


def test_compute_metrics_uses_the_stream_over_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # compute_metrics re-reads its in-memory lists when the pixels exceed the budget.
    images = _realistic_images(seed=5, n=6, size=12)
    masks = [m for m, _ in images]
    maps = [a.astype(np.float64) for _, a in images]
    labels = [int(m.any()) for m in masks]
    scores = [float(a.max()) for a in maps]
    base = compute_metrics(labels, scores, masks, maps)
    monkeypatch.setattr(metrics_module, "DEFAULT_BUDGET_PX", 100)
    small = compute_metrics(labels, scores, masks, maps)
    assert small == {k: pytest.approx(v, rel=1e-12, abs=1e-12) for k, v in base.items()}


def test_validation() -> None:
    with pytest.raises(ValueError, match="budget_px"):
        PixelMetrics(budget_px=0)
    with pytest.raises(ValueError, match="fpr_limit"):
        PixelMetrics(fpr_limit=1.5)
    metrics = PixelMetrics(budget_px=10)
    with pytest.raises(ValueError, match="equal shape"):
        metrics.add(np.zeros((3, 3), bool), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="2D"):
        metrics.add(np.zeros(9, bool), np.zeros(9))
    with pytest.raises(ValueError, match="finite"):
        metrics.add(np.zeros((2, 2), bool), np.array([[0.0, np.inf], [0.0, 1.0]]))
    assert metrics.n_images == 0
    assert all(math.isnan(v) for v in metrics.result().values())  # nothing added

    images = _realistic_images(seed=6, n=3, size=5)
    for mask, amap in images:
        metrics.add(mask, amap)
    with pytest.raises(ValueError, match="reread yielded 2 images"):
        metrics.result(reread=_Source(images[:2]))
    shifted: Callable[[], Images] = lambda: [(m, a + 10.0) for m, a in images]  # noqa: E731
    with pytest.raises(ValueError, match="different pixels"):
        metrics.result(reread=shifted)
