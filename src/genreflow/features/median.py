"""Exact sliding-window median filters for HPSS, compiled with numba.

``scipy.ndimage.median_filter`` re-selects the median of every window from scratch and
is ~95% of the naive extractor's time. Here every line keeps its window sorted; a step
removes the outgoing sample and inserts the incoming one with branch-free selects, and
many lines (the contiguous axis) advance in lock-step so the compiler can vectorise.
The median of an odd window is one of its samples, so the result is bit-identical to
ndimage's. The boundary is ndimage's ``mode='reflect'`` (numpy's ``'symmetric'`` pad),
for lines longer than half the window (a spectrogram's 130 frames and 1025 bins are).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_LANES = 128  # lines advanced together: the two sorted windows stay in L1 cache


@njit(cache=True, nogil=True, inline="always")
def _reflect(j, n):
    if j < 0:
        return -1 - j
    if j >= n:
        return 2 * n - 1 - j
    return j


@njit(cache=True, nogil=True)
def median_filter_axis0(x, k, out):
    """Median of every ``k``-wide window along axis 0 of the 2-D ``x``, into ``out``.

    Each column is an independent line; columns should be the contiguous axis.
    """
    n, lanes = x.shape
    if k % 2 == 0 or k < 1:
        raise ValueError("median filter: the window must be odd")
    half = k // 2
    if n <= half:
        raise ValueError("median filter: lines must be longer than half the window")
    inf = x.dtype.type(np.inf)
    # Rows 1..k hold each line's window sorted; rows 0 and k+1 are -inf/+inf guards.
    window = np.empty((k + 2, _LANES), dtype=x.dtype)
    shifted = np.empty((k + 2, _LANES), dtype=x.dtype)
    old = np.empty(_LANES, dtype=x.dtype)
    new = np.empty(_LANES, dtype=x.dtype)
    rank_old = np.empty(_LANES, dtype=np.int32)
    rank_new = np.empty(_LANES, dtype=np.int32)
    for start in range(0, lanes, _LANES):
        m = min(_LANES, lanes - start)
        window[:, :] = inf
        window[0, :] = -inf
        # The first k steps replace +inf placeholders, which sorts the first window.
        for step in range(k + n - 1):
            src = _reflect(step - half, n)
            for lane in range(m):
                new[lane] = x[src, start + lane]
            if step < k:
                for lane in range(m):
                    old[lane] = inf
            else:
                gone = _reflect(step - k - half, n)
                for lane in range(m):
                    old[lane] = x[gone, start + lane]
            # rank_old: slot of the outgoing sample; rank_new: slot of the incoming one
            # once the outgoing one is removed.
            for lane in range(m):
                rank_old[lane] = 0
                rank_new[lane] = -np.int32(old[lane] < new[lane])
            for i in range(1, k + 1):
                for lane in range(m):
                    value = window[i, lane]
                    rank_old[lane] += np.int32(value < old[lane])
                    rank_new[lane] += np.int32(value < new[lane])
            for i in range(k):
                for lane in range(m):
                    below = window[i, lane]
                    here = window[i + 1, lane]
                    above = window[i + 2, lane]
                    r_old = rank_old[lane]
                    r_new = rank_new[lane]
                    kept_low = here if i < r_old else above
                    kept_high = below if i <= r_old else here
                    value = kept_low if i < r_new else kept_high
                    shifted[i + 1, lane] = new[lane] if i == r_new else value
            for i in range(1, k + 1):
                for lane in range(m):
                    window[i, lane] = shifted[i, lane]
            if step >= k - 1:
                row = step - k + 1
                for lane in range(m):
                    out[row, start + lane] = window[half + 1, lane]
