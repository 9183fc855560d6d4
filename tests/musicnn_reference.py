"""An independent float64 musicnn forward pass, written from musicnn's ``models.py``.

It follows the TF graph op by op (batch norm from gamma/beta/moving stats, ReLU before
batch norm, max-pooling after it, the transposes and the row-major flatten of the
(753, 2) max/mean pool), with each convolution a plain sum over kernel offsets. The
production code (genreflow.features.musicnn) instead folds batch norm into affine
maps, pools before ReLU and runs im2col matrix products in float32; agreement of the
two checks those rewrites.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-3


def batch_norm(x: np.ndarray, w: dict, name: str) -> np.ndarray:
    g, b = w[f"{name}/gamma"], w[f"{name}/beta"]
    mean, var = w[f"{name}/moving_mean"], w[f"{name}/moving_variance"]
    return (x - mean) / np.sqrt(var + EPS) * g + b


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid' 2-D convolution of x (T, F, Cin) with kernel (kt, kf, Cin, Cout)."""
    kt, kf, _, cout = kernel.shape
    t_out, f_out = x.shape[0] - kt + 1, x.shape[1] - kf + 1
    out = np.zeros((t_out, f_out, cout))
    for i in range(kt):
        for j in range(kf):
            out += x[i : i + t_out, j : j + f_out, :] @ kernel[i, j]
    return out + bias


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def conv_name(i: int) -> str:
    return "conv2d" + (f"_{i}" if i else "")


def bn_name(i: int) -> str:
    return "batch_normalization" + (f"_{i}" if i else "")


def forward(patch: np.ndarray, w: dict) -> tuple[np.ndarray, np.ndarray]:
    """One (187, 96) log-mel patch -> (logits (50,), penultimate (200,))."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = batch_norm(patch.astype(np.float64)[:, :, None], w, bn_name(0))  # T, F, 1
    padded = np.pad(x, ((3, 3), (0, 0), (0, 0)))
    front = []
    for i in (0, 1):  # timbral 7x38, 7x67
        y = batch_norm(relu(conv2d(padded, w[f"{conv_name(i)}/kernel"],
                                   w[f"{conv_name(i)}/bias"])), w, bn_name(i + 1))
        front.append(y.max(axis=1))  # max-pool over all frequency: (T, C)
    for i, length in zip((2, 3, 4), (128, 64, 32), strict=True):  # temporal, 'same'
        total = length - 1
        same = np.pad(x, ((total // 2, total - total // 2), (0, 0), (0, 0)))
        y = batch_norm(relu(conv2d(same, w[f"{conv_name(i)}/kernel"],
                                   w[f"{conv_name(i)}/bias"])), w, bn_name(i + 1))
        front.append(y.max(axis=1))
    front_end = np.concatenate(front, axis=1)  # T, 561
    layers = [front_end]
    previous = front_end
    for n in range(3):  # mid-end: 7 x all-features convolutions, 2nd and 3rd residual
        image = np.pad(previous[:, :, None], ((3, 3), (0, 0), (0, 0)))
        y = batch_norm(relu(conv2d(image, w[f"{conv_name(5 + n)}/kernel"],
                                   w[f"{conv_name(5 + n)}/bias"])), w, bn_name(6 + n))
        y = y[:, 0, :]  # (T, 1, 64) -> transpose [0,1,3,2] -> (T, 64)
        previous = y if n == 0 else y + previous
        layers.append(previous)
    features = np.concatenate(layers, axis=1)  # T, 753
    pooled = np.stack([features.max(axis=0), features.mean(axis=0)], axis=1)  # 753, 2
    flat = batch_norm(pooled.reshape(-1), w, bn_name(9))
    dense = batch_norm(relu(flat @ w["dense/kernel"] + w["dense/bias"]), w, bn_name(10))
    return dense @ w["dense_1/kernel"] + w["dense_1/bias"], dense
