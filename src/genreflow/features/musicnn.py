"""musicnn's pretrained music taggers as a segment feature set, in numpy (no TensorFlow).

musicnn (Pons & Serra, 2019; ISC licence) ships TF1 checkpoints of convolutional
taggers trained on the Million Song Dataset (MSD, 50 Last.fm tags) and MagnaTagATune
(MTT, 50 tags) inside its PyPI wheel. We read those weights with
:mod:`genreflow.features.checkpoint` and run the network's inference graph (musicnn's
``models.build_musicnn`` with ``is_training=False``) here:

front-end   batch-normalised log-mel patch (187 frames x 96 bands), two timbral
            convolutions (7 x 38 and 7 x 67 over time x frequency) and three temporal
            ones (128, 64, 32 frames), each ReLU -> batch norm -> max over frequency
mid-end     three 7-frame 1-D convolutions (64 filters) with residual connections
back-end    max and mean over time of all of the above (753 x 2, interleaved), batch
            norm, dense 200 + ReLU + batch norm (the "penultimate" embedding), dense 50
            + sigmoid (the tags)

Each of our 3-s segments (66149 samples at 22050 Hz) is resampled to 16 kHz, giving
exactly one 187-frame patch, the input length the taggers were trained on. A segment's
features are its 50 tag logits (the sigmoid's input: a linear model on them did better
out of domain than on the probabilities, bench/RESULTS.md) and its 200-d penultimate
embedding, per model. The
convolutions are matrix products over im2col windows, in float32, a few patches at a
time to bound memory; ``tests/musicnn_reference.py`` is an independent float64 direct
convolution that this is checked against.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187
BN_EPSILON = 1e-3  # tf.layers.batch_normalization's default
BATCH = 1  # patches per matrix product: 12 MB of im2col windows, cache-friendlier than 4 (-8% CPU)
MODELS = ("MSD_musicnn",)  # MTT measured: no better out of domain, twice the cost

MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)
MTT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera",
    "male", "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir",
    "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)
TAGS = {"MSD_musicnn": MSD_TAGS, "MTT_musicnn": MTT_TAGS}
N_EMBEDDING = 200


class WeightsMissing(RuntimeError):
    """musicnn's wheel (which carries the weights) is not installed."""


def weights_dir(model: str) -> Path:
    """The checkpoint folder inside the installed musicnn package, found without
    importing it (its ``__init__`` is empty, but nothing here needs it executed)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissing(
            "the musicnn package (its wheel carries the weights) is not installed: "
            "pip install --no-deps musicnn==0.1.0 (make install does)")
    folder = Path(next(iter(spec.submodule_search_locations))) / model
    if not (folder / ".index").is_file():
        raise WeightsMissing(f"no {model} checkpoint in {folder}")
    return folder


def column_names(model: str) -> list[str]:
    prefix = model.split("_")[0].lower()
    tags = [f"{prefix}_logit_{t.lower().replace(' ', '_').replace('-', '_')}"
            for t in TAGS[model]]
    return tags + [f"{prefix}_emb{i}" for i in range(N_EMBEDDING)]


@dataclass(frozen=True)
class BatchNorm:
    scale: np.ndarray
    shift: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.shift


@dataclass(frozen=True)
class FrequencyPooledConv:
    """A front-end block: conv (kernel as a (window, filters) matrix, channels whose batch
    norm scale is negative negated) -> ReLU -> batch norm -> max over frequency."""

    kernel: np.ndarray
    bias: np.ndarray
    sign: np.ndarray
    bn: BatchNorm


@dataclass(frozen=True)
class Tagger:
    """One musicnn network's inference weights, float32."""

    bn: list[BatchNorm]
    timbral: list[FrequencyPooledConv]
    temporal: list[FrequencyPooledConv]
    midend: list[tuple[np.ndarray, np.ndarray]]
    dense: list[tuple[np.ndarray, np.ndarray]]


def _batch_norm(t: dict[str, np.ndarray], name: str) -> BatchNorm:
    scale = t[f"{name}/gamma"] / np.sqrt(t[f"{name}/moving_variance"] + BN_EPSILON)
    shift = t[f"{name}/beta"] - t[f"{name}/moving_mean"] * scale
    return BatchNorm(scale.astype(np.float32), shift.astype(np.float32))


@lru_cache(maxsize=len(MODELS))
def load_tagger(model: str) -> Tagger:
    from genreflow.features.checkpoint import read_checkpoint

    t = read_checkpoint(str(weights_dir(model)) + "/")
    bns = [_batch_norm(t, "batch_normalization" + (f"_{i}" if i else "")) for i in range(11)]
    convs = []
    for i in range(8):
        name = "conv2d" + (f"_{i}" if i else "")
        kernel = t[f"{name}/kernel"]  # (time, freq, 1, filters)
        convs.append((kernel.reshape(-1, kernel.shape[-1]), t[f"{name}/bias"]))

    def pooled(i: int) -> FrequencyPooledConv:
        (kernel, bias), bn = convs[i], bns[i + 1]
        sign = np.where(bn.scale > 0, 1, -1).astype(np.float32)
        return FrequencyPooledConv(np.ascontiguousarray(kernel * sign), bias.copy(), sign, bn)

    dense = [(t[f"{n}/kernel"].copy(), t[f"{n}/bias"].copy()) for n in ("dense", "dense_1")]
    return Tagger(bns, [pooled(0), pooled(1)], [pooled(2), pooled(3), pooled(4)],
                  [(np.ascontiguousarray(k), b.copy()) for k, b in convs[5:]], dense)


def _product(windows: np.ndarray, kernel: np.ndarray, lead: int) -> np.ndarray:
    """windows @ kernel: the window axes after the ``lead`` ones are flattened (im2col,
    one copy) in the kernel's (time, frequency) row order."""
    out = windows.reshape(-1, kernel.shape[0]) @ kernel
    return out.reshape(*windows.shape[:lead], kernel.shape[1])


def _pooled_block(windows: np.ndarray, block: FrequencyPooledConv) -> np.ndarray:
    """max over frequency of bn(relu(conv + bias)) for windows (B, T, F, k...).

    Bias and ReLU commute with a max, and batch norm is a per-channel affine map whose
    max over frequency is taken at the conv's max where it scales by a positive number
    and at its min elsewhere; ``block.kernel`` has those channels negated, so one max over
    (B, T, F, C) serves both, and the rest runs on (B, T, C).
    """
    extreme = _product(windows, block.kernel, 3).max(axis=2) * block.sign
    return block.bn(np.maximum(extreme + block.bias, 0))


def _frontend(net: Tagger, x: np.ndarray) -> np.ndarray:
    """(B, 187, 96) log-mel -> (B, 187, 561) front-end features."""
    x = net.bn[0](x)
    padded = np.pad(x, ((0, 0), (3, 3), (0, 0)))
    parts = [_pooled_block(sliding_window_view(padded, (7, width), axis=(1, 2)), block)
             for block, width in zip(net.timbral, (38, 67), strict=True)]
    for block, length in zip(net.temporal, (128, 64, 32), strict=True):
        before = (length - 1) // 2  # TF "same": the extra pad goes after
        padded_t = np.pad(x, ((0, 0), (before, length - 1 - before), (0, 0)))
        parts.append(_pooled_block(sliding_window_view(padded_t, length, axis=1), block))
    return np.concatenate(parts, axis=2)


def _midend(net: Tagger, front: np.ndarray) -> list[np.ndarray]:
    """Three 7-frame convolutions over all channels; the 2nd and 3rd residual."""
    outputs = [front]
    x = front
    for i in range(3):
        windows = sliding_window_view(np.pad(x, ((0, 0), (3, 3), (0, 0))), 7, axis=1)
        kernel, bias = net.midend[i]
        out = net.bn[6 + i](np.maximum(_product(windows.transpose(0, 1, 3, 2), kernel, 2)
                                       + bias, 0))
        x = out if i == 0 else out + x
        outputs.append(x)
    return outputs


def forward(net: Tagger, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, 187, 96) log-mel patches -> (tag logits (B, 50), embedding (B, 200))."""
    features = np.concatenate(_midend(net, _frontend(net, patches)), axis=2)  # B,T,753
    pooled = np.stack([features.max(axis=1), features.mean(axis=1)], axis=2)  # B,753,2
    flat = net.bn[9](pooled.reshape(len(patches), -1))
    (w1, b1), (w2, b2) = net.dense
    embedding = net.bn[10](np.maximum(flat @ w1 + b1, 0))
    return embedding @ w2 + b2, embedding


def log_mel_patches(segments: np.ndarray, sr: int) -> np.ndarray:
    """(n, samples at ``sr``) segments -> (n, 187, 96) float32 log-mel patches.

    musicnn's ``log10(10000 * S + 1)``, computed in float32: the package casts S to
    float16 first, and under numpy 2 the product then stays float16 and overflows.
    """
    from genreflow.audio import resample
    from genreflow.features.spectrum import melspectrogram

    y = resample(np.asarray(segments, dtype=np.float32), sr, SR)
    mel = melspectrogram(y, SR, N_FFT, HOP, N_MELS)
    if mel.shape[-1] < PATCH_FRAMES:
        raise ValueError(f"segments of {segments.shape[-1]} samples at {sr} Hz give "
                         f"{mel.shape[-1]} frames, fewer than {PATCH_FRAMES}")
    return np.log10(10000 * mel[..., :PATCH_FRAMES] + 1).transpose(0, 2, 1).copy()


def tag_and_embed(patches: np.ndarray, model: str) -> np.ndarray:
    """(n, 187, 96) patches -> (n, 250): tag logits then embedding, ``BATCH`` patches at
    a time."""
    net = load_tagger(model)
    out = np.empty((len(patches), len(TAGS[model]) + N_EMBEDDING), dtype=np.float32)
    for start in range(0, len(patches), BATCH):
        tags, embedding = forward(net, patches[start : start + BATCH])
        out[start : start + BATCH] = np.concatenate([tags, embedding], axis=1)
    return out


def musicnn_features(segments: np.ndarray, sr: int, models=MODELS) -> np.ndarray:
    """(n, samples) segments -> (n, 250 * len(models)) features, ``column_names`` order."""
    patches = log_mel_patches(segments, sr)
    return np.concatenate([tag_and_embed(patches, m) for m in models], axis=1)
