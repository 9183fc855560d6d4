"""A deterministic synthetic demo corpus, so the pipeline runs with no real audio.

Each genre is a :class:`Style`: tempo range, swing, 16-step drum patterns, bass and
comping rhythms, chord progression, scale, register and instrument timbres. Every track
draws its key, tempo, level, mix, melody and ghost notes from its own random generator,
so a model has to learn the genre rather than memorise a track. Genres not listed in
:data:`STYLES` get a style derived from a SHA-256 of their name (stable across runs and
machines, unlike ``hash()``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
DEFAULT_SECONDS = 9.2  # three full 66149-sample segments plus a little tail

MAJ = (0, 4, 7)
MIN = (0, 3, 7)
DOM7 = (0, 4, 7, 10)
MIN7 = (0, 3, 7, 10)
MAJ7 = (0, 4, 7, 11)
MIN9 = (0, 3, 7, 10, 14)
POWER = (0, 7, 12)

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DORIAN = (0, 2, 3, 5, 7, 9, 10)
MIXOLYDIAN = (0, 2, 4, 5, 7, 9, 10)
PHRYGIAN = (0, 1, 3, 5, 7, 8, 10)
MAJOR_PENTA = (0, 2, 4, 7, 9)
MINOR_PENTA = (0, 3, 5, 7, 10)
BLUES = (0, 3, 5, 6, 7, 10)

INSTRUMENTS = ("sine", "strings", "pluck", "epiano", "saw", "organ", "power")


@dataclass(frozen=True)
class Style:
    """How one genre sounds. Patterns are one 4/4 bar of 16 steps ('.' = rest).

    Drum characters: ``x`` hit, ``g`` ghost (quiet). Bass: ``r`` root, ``f`` fifth,
    ``o`` octave, ``w`` walking (a random chord or scale tone). Comping: ``x`` chord,
    ``a`` next arpeggio tone, ``-`` hold the previous hit through this step.
    """

    bpm: tuple[float, float]
    swing: float  # delay of off-beat steps, as a fraction of one step
    swing_16th: bool  # swing 16ths (hip-hop) rather than 8ths (blues, jazz)
    kick: str
    snare: str
    hat: str
    open_hat: str
    ride: str
    progression: tuple[tuple[int, tuple[int, ...]], ...]  # (semitones above tonic, chord)
    scale: tuple[int, ...]
    tonic: int  # MIDI note of the bass tonic before the per-track key shift
    bass: str
    bass_timbre: str
    comp: str
    comp_timbre: str
    comp_gate: float  # fraction of the time to the next hit a chord sounds
    lead_timbre: str
    lead_density: float  # chance of a new melody note per 8th
    drive: float  # tanh overdrive of the comping track (0 = clean)
    kick_808: bool  # long, pitch-falling sub kick
    crash_every: int  # bars between crashes (0 = never)
    reverb: float  # wet level of a short room/hall tail
    loudness: float  # target RMS of the mix


def _bar(*hits: int, ghosts: Sequence[int] = ()) -> str:
    return "".join("x" if i in hits else "g" if i in ghosts else "." for i in range(16))


STYLES: dict[str, Style] = {
    "blues": Style(
        bpm=(68, 96), swing=0.33, swing_16th=False,
        kick=_bar(0, 8, 10), snare=_bar(4, 12, ghosts=(14,)), hat=_bar(4, 12),
        open_hat=_bar(), ride=_bar(0, 2, 4, 6, 8, 10, 12, 14),
        progression=((0, DOM7), (5, DOM7), (0, DOM7), (7, DOM7)), scale=BLUES, tonic=40,
        bass="r-f-o-f-r-f-o-f-", bass_timbre="pluck",
        comp="x---x---x---x---", comp_timbre="organ", comp_gate=0.9,
        lead_timbre="pluck", lead_density=0.45, drive=1.5, kick_808=False, crash_every=0,
        reverb=0.15, loudness=0.12,
    ),
    "classical": Style(
        bpm=(56, 88), swing=0.0, swing_16th=False,
        kick=_bar(), snare=_bar(), hat=_bar(), open_hat=_bar(), ride=_bar(),
        progression=((0, MAJ), (5, MAJ), (7, DOM7), (0, MAJ), (9, MIN), (2, MIN)),
        scale=MAJOR, tonic=36,
        bass="r---------------", bass_timbre="strings",
        comp="aaaaaaaaaaaaaaaa", comp_timbre="strings", comp_gate=3.0,
        lead_timbre="sine", lead_density=0.5, drive=0.0, kick_808=False, crash_every=0,
        reverb=0.45, loudness=0.06,
    ),
    "country": Style(
        bpm=(100, 132), swing=0.0, swing_16th=False,
        kick=_bar(0, 8), snare=_bar(4, 12), hat=_bar(0, 2, 4, 6, 8, 10, 12, 14),
        open_hat=_bar(), ride=_bar(),
        progression=((0, MAJ), (5, MAJ), (7, MAJ), (0, MAJ)), scale=MAJOR_PENTA, tonic=40,
        bass="r-..f-..r-..f-..", bass_timbre="pluck",
        comp="..x-..x-..x-..x-", comp_timbre="pluck", comp_gate=0.9,
        lead_timbre="pluck", lead_density=0.7, drive=0.0, kick_808=False, crash_every=0,
        reverb=0.1, loudness=0.11,
    ),
    "disco": Style(
        bpm=(112, 128), swing=0.0, swing_16th=False,
        kick=_bar(0, 4, 8, 12), snare=_bar(4, 12), hat=_bar(0, 1, 3, 4, 5, 7, 8, 9, 11, 12, 13, 15),
        open_hat=_bar(2, 6, 10, 14), ride=_bar(),
        progression=((0, MIN7), (5, MIN7)), scale=DORIAN, tonic=41,
        bass="r.o.r.o.r.o.r.o.", bass_timbre="saw",
        comp="x-.x-.x-.x-.x-.x", comp_timbre="strings", comp_gate=0.8,
        lead_timbre="saw", lead_density=0.35, drive=0.0, kick_808=False, crash_every=4,
        reverb=0.2, loudness=0.14,
    ),
    "hiphop": Style(
        bpm=(80, 96), swing=0.25, swing_16th=True,
        kick=_bar(0, 7, 10), snare=_bar(4, 12), hat=_bar(*range(16)),
        open_hat=_bar(), ride=_bar(),
        progression=((0, MIN7), (8, MAJ7), (3, MAJ7), (10, DOM7)), scale=MINOR, tonic=31,
        bass="r------.....r---", bass_timbre="sine",
        comp="x-------x-------", comp_timbre="epiano", comp_gate=1.0,
        lead_timbre="epiano", lead_density=0.2, drive=0.0, kick_808=True, crash_every=0,
        reverb=0.1, loudness=0.14,
    ),
    "jazz": Style(
        bpm=(120, 190), swing=0.33, swing_16th=False,
        kick=_bar(ghosts=(0, 8)), snare=_bar(ghosts=(6, 14)), hat=_bar(4, 12),
        open_hat=_bar(), ride=_bar(0, 4, 6, 8, 12, 14),
        progression=((2, MIN7), (7, DOM7), (0, MAJ7), (9, DOM7)), scale=DORIAN, tonic=36,
        bass="w---w---w---w---", bass_timbre="sine",
        comp="...x-.....x-....", comp_timbre="epiano", comp_gate=0.8,
        lead_timbre="sine", lead_density=0.6, drive=0.0, kick_808=False, crash_every=0,
        reverb=0.25, loudness=0.08,
    ),
    "metal": Style(
        bpm=(150, 200), swing=0.0, swing_16th=False,
        kick=_bar(*range(16)), snare=_bar(4, 12), hat=_bar(),
        open_hat=_bar(), ride=_bar(0, 2, 4, 6, 8, 10, 12, 14),
        progression=((0, POWER), (1, POWER), (0, POWER), (3, POWER)), scale=PHRYGIAN, tonic=28,
        bass="rrrrrrrrrrrrrrrr", bass_timbre="saw",
        comp="xxxxxxxxxxxxxxxx", comp_timbre="power", comp_gate=0.85,
        lead_timbre="power", lead_density=0.0, drive=9.0, kick_808=False, crash_every=1,
        reverb=0.05, loudness=0.25,
    ),
    "pop": Style(
        bpm=(96, 124), swing=0.0, swing_16th=False,
        kick=_bar(0, 6, 8), snare=_bar(4, 12), hat=_bar(0, 2, 4, 6, 8, 10, 12, 14),
        open_hat=_bar(), ride=_bar(),
        progression=((0, MAJ), (7, MAJ), (9, MIN), (5, MAJ)), scale=MAJOR, tonic=40,
        bass="r-.r-.r-r-.r-.r-", bass_timbre="sine",
        comp="x-x-x-x-x-x-x-x-", comp_timbre="saw", comp_gate=0.9,
        lead_timbre="strings", lead_density=0.55, drive=0.0, kick_808=False, crash_every=4,
        reverb=0.2, loudness=0.15,
    ),
    "reggae": Style(
        bpm=(64, 82), swing=0.1, swing_16th=False,
        kick=_bar(8), snare=_bar(8), hat=_bar(0, 2, 4, 6, 8, 10, 12, 14, ghosts=(3, 11)),
        open_hat=_bar(), ride=_bar(),
        progression=((0, MIN), (5, MIN)), scale=MINOR, tonic=33,
        bass="r--r-f--o--f-r--", bass_timbre="sine",
        comp="....x.......x...", comp_timbre="organ", comp_gate=0.7,
        lead_timbre="organ", lead_density=0.25, drive=0.0, kick_808=False, crash_every=0,
        reverb=0.3, loudness=0.11,
    ),
    "rock": Style(
        bpm=(108, 144), swing=0.0, swing_16th=False,
        kick=_bar(0, 3, 8, 10), snare=_bar(4, 12), hat=_bar(0, 2, 4, 6, 8, 10, 12, 14),
        open_hat=_bar(), ride=_bar(),
        progression=((0, POWER), (10, POWER), (5, POWER), (0, POWER)), scale=MIXOLYDIAN,
        tonic=40,
        bass="r-r-r-r-r-r-r-r-", bass_timbre="pluck",
        comp="x.x.x.x.x.x.x.x.", comp_timbre="power", comp_gate=1.0,
        lead_timbre="pluck", lead_density=0.3, drive=3.0, kick_808=False, crash_every=2,
        reverb=0.15, loudness=0.17,
    ),
}


def _stable_digest(genre: str) -> bytes:
    return hashlib.sha256(genre.strip().lower().encode("utf-8")).digest()


def style_for(genre: str) -> Style:
    """The genre's style; an unknown name gets one derived from a hash of the name."""
    key = genre.strip().lower()
    if key in STYLES:
        return STYLES[key]
    rng = np.random.default_rng(np.frombuffer(_stable_digest(key), dtype=np.uint32))
    low = float(rng.uniform(70, 160))
    chords = (MAJ, MIN, DOM7, MIN7, MAJ7, MIN9, POWER)
    scales = (MAJOR, MINOR, DORIAN, MIXOLYDIAN, PHRYGIAN, MAJOR_PENTA, MINOR_PENTA, BLUES)

    def pattern(density: float) -> str:
        return "".join("x" if rng.random() < density else "." for _ in range(16))

    return Style(
        bpm=(low, low + float(rng.uniform(8, 30))),
        swing=float(rng.choice([0.0, 0.0, 0.2, 0.33])),
        swing_16th=bool(rng.random() < 0.5),
        kick=pattern(0.3), snare=pattern(0.15), hat=pattern(float(rng.uniform(0, 0.9))),
        open_hat=pattern(0.1), ride=pattern(float(rng.choice([0.0, 0.4]))),
        progression=tuple(
            (int(rng.integers(12)), chords[int(rng.integers(len(chords)))])
            for _ in range(int(rng.integers(2, 5)))
        ),
        scale=scales[int(rng.integers(len(scales)))],
        tonic=int(rng.integers(28, 46)),
        bass="".join(rng.choice(list("rrfow..."), 16)),
        bass_timbre=str(rng.choice(["sine", "saw", "pluck"])),
        comp=pattern(float(rng.uniform(0.1, 0.8))),
        comp_timbre=str(rng.choice(INSTRUMENTS)),
        comp_gate=float(rng.uniform(0.2, 1.0)),
        lead_timbre=str(rng.choice(INSTRUMENTS)),
        lead_density=float(rng.uniform(0, 0.7)),
        drive=float(rng.choice([0.0, 0.0, 2.0, 6.0])),
        kick_808=bool(rng.random() < 0.3),
        crash_every=int(rng.choice([0, 1, 2, 4])),
        reverb=float(rng.uniform(0, 0.4)),
        loudness=float(rng.uniform(0.06, 0.2)),
    )


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _tone(timbre: str, hz: float, n: int, sr: int) -> np.ndarray:
    """One note of ``n`` samples; timbres differ in harmonic content and envelope.

    Pure in its arguments, so a clip can cache repeated notes (most of the synthesis time).
    """
    t = np.arange(n) / sr
    attack = np.minimum(1.0, t / 0.005)
    if timbre == "sine":
        wave = np.sin(2 * np.pi * hz * t) + 0.15 * np.sin(4 * np.pi * hz * t)
        return wave * attack * np.exp(-t * 1.5)
    if timbre == "epiano":
        index = 1.8 * np.exp(-t * 4.0)
        wave = np.sin(2 * np.pi * hz * t + index * np.sin(2 * np.pi * hz * t))
        return wave * attack * np.exp(-t * 2.5)
    kmax = max(1, min(24, int(0.45 * sr / hz)))
    k = np.arange(1, kmax + 1)
    if timbre == "strings":
        vibrato = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * t)
        phase = 2 * np.pi * hz * np.cumsum(vibrato) / sr
        amps = 1.0 / k**1.6
        env = np.minimum(1.0, t / 0.08)
    elif timbre == "pluck":
        phase = 2 * np.pi * hz * t
        amps = 1.0 / k * np.exp(-t[:, None] * (1.5 + 1.2 * k))
        env = attack
    elif timbre == "organ":
        phase = 2 * np.pi * hz * t
        amps = np.where(np.isin(k, (1, 2, 3, 4, 6, 8)), 0.6, 0.0)
        env = attack
    else:  # "saw" and "power": bright sawtooth; "power" is overdriven later
        phase = 2 * np.pi * hz * t
        amps = 1.0 / k
        env = attack * np.exp(-t * (0.8 if timbre == "saw" else 0.2))
    partials = np.sin(phase[:, None] * k[None, :])
    return (partials * amps).sum(axis=1) * env


class _Track:
    """A mono buffer that one-shots and notes are added into at sample offsets."""

    def __init__(self, n: int):
        self.y = np.zeros(n)

    def add(self, start: int, sound: np.ndarray, gain: float = 1.0) -> None:
        if start >= self.y.size:
            return
        end = min(self.y.size, start + sound.size)
        self.y[max(0, start) : end] += gain * sound[max(0, -start) : end - start]


def _decay(n: int, sr: int, seconds: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (sr * seconds))


def _drum_kit(sr: int, rng: np.random.Generator, kick_808: bool) -> dict[str, np.ndarray]:
    """Per-track one-shots: decaying sines for kicks, shaped noise for snare and cymbals."""
    def noise(seconds: float) -> np.ndarray:
        return rng.standard_normal(int(sr * seconds))

    kick_len = 0.6 if kick_808 else 0.25
    t = np.arange(int(sr * kick_len)) / sr
    low = rng.uniform(40, 50) if kick_808 else rng.uniform(50, 65)
    sweep = low + (rng.uniform(120, 180) - low) * np.exp(-t * 30)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sr) * _decay(t.size, sr, kick_len / 4)
    if kick_808:
        kick = np.tanh(2.0 * kick)
    body_hz = rng.uniform(170, 220)
    sn = noise(0.2)
    snare = 0.6 * np.diff(sn, prepend=0.0) * _decay(sn.size, sr, 0.05)
    snare += 0.5 * np.sin(2 * np.pi * body_hz * np.arange(sn.size) / sr) * _decay(sn.size, sr, 0.03)

    def metal(seconds: float, tau: float) -> np.ndarray:
        hiss = np.diff(np.diff(noise(seconds), prepend=0.0), prepend=0.0)
        return 0.25 * hiss * _decay(hiss.size, sr, tau)

    ride_n = int(sr * 0.6)
    bell = _tone("sine", rng.uniform(3000, 4200), ride_n, sr) * _decay(ride_n, sr, 0.2)
    return {
        "kick": kick,
        "snare": snare,
        "hat": metal(0.08, 0.012),
        "open_hat": metal(0.35, 0.09),
        "ride": metal(0.6, 0.2) + 0.05 * bell,
        "crash": metal(1.5, 0.5),
    }


def synthesize_clip(
    genre: str, seconds: float, rng: np.random.Generator, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """A float32 mono clip in [-1, 1] of ``genre``; all randomness comes from ``rng``."""
    style = style_for(genre)
    n = int(round(seconds * sr))
    bpm = rng.uniform(*style.bpm)
    step = 60.0 / bpm / 4  # one 16th, in seconds
    key = int(rng.integers(-5, 7))
    n_steps = int(np.ceil(seconds / step)) + 1
    rotation = int(rng.integers(len(style.progression)))
    start_pad = rng.uniform(0, 0.05)

    @functools.cache
    def tone(timbre: str, note: int, size: int) -> np.ndarray:
        return _tone(timbre, _midi_hz(note), size, sr)

    def onset(i: int) -> int:
        offbeat = (i % 2 == 1) if style.swing_16th else (i % 4 == 2)
        t = start_pad + i * step + (style.swing * step if offbeat else 0.0)
        return int((t + rng.normal(0, 0.004)) * sr)

    def chord_at(i: int) -> tuple[int, tuple[int, ...]]:
        root, chord = style.progression[(i // 16 + rotation) % len(style.progression)]
        return style.tonic + key + root, chord

    drums = _Track(n)
    kit = _drum_kit(sr, rng, style.kick_808)
    ghost_p = rng.uniform(0.0, 0.15)
    for name, pattern, level in (
        ("kick", style.kick, 0.9), ("snare", style.snare, 0.6), ("hat", style.hat, 0.35),
        ("open_hat", style.open_hat, 0.3), ("ride", style.ride, 0.35),
    ):
        if "x" not in pattern and "g" not in pattern:
            continue
        for i in range(n_steps):
            ch = pattern[i % 16]
            if ch == "." and name in ("kick", "snare", "hat") and rng.random() < ghost_p / 4:
                ch = "g"
            if ch != ".":
                velocity = (1.0 if ch == "x" else 0.3) * rng.uniform(0.8, 1.1)
                drums.add(onset(i), kit[name], level * velocity)
    if style.crash_every:
        for bar in range(0, n_steps // 16 + 1, style.crash_every):
            drums.add(onset(bar * 16), kit["crash"], 0.3)

    def held(pattern: str, i: int) -> int:
        """Steps from an onset until the next step that is not a '-' (hold)."""
        return next(j for j in range(1, 17) if pattern[(i + j) % 16] != "-")

    bass = _Track(n)
    for i in range(n_steps):
        ch = style.bass[i % 16]
        if ch in ".-":
            continue
        root, chord = chord_at(i)
        offset = {"r": 0, "f": 7, "o": 12}.get(ch)
        if offset is None:
            offset = int(rng.choice(list(chord) + list(style.scale)))
        size = int(0.95 * held(style.bass, i) * step * sr)
        note = tone(style.bass_timbre, root + offset, size)
        bass.add(onset(i), note * np.minimum(1.0, np.arange(size)[::-1] / (0.01 * sr)))

    comp = _Track(n)
    arp = 0
    for i in range(n_steps):
        ch = style.comp[i % 16]
        if ch in ".-":
            continue
        dur = style.comp_gate * held(style.comp, i) * step
        root, chord = chord_at(i)
        voicing = [root + 12 + iv for iv in chord]
        if ch == "a":
            notes = [voicing[arp % len(voicing)] + 12 * ((arp // len(voicing)) % 2)]
            arp += 1
        else:
            notes = voicing
        for note in notes:
            comp.add(onset(i), tone(style.comp_timbre, note, int(dur * sr)))
    if style.drive:
        comp.y = np.tanh(style.drive * comp.y / (np.abs(comp.y).max() + 1e-9))

    lead = _Track(n)
    degree = int(rng.integers(len(style.scale)))
    for i in range(0, n_steps, 2):
        if rng.random() >= style.lead_density:
            continue
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 2 * len(style.scale) - 1))
        octave, idx = divmod(degree, len(style.scale))
        note = style.tonic + key + 24 + 12 * octave + style.scale[idx]
        dur = step * 2 * rng.choice([1, 1, 2, 3])
        lead.add(onset(i), tone(style.lead_timbre, note, int(dur * sr)))
    if style.drive and style.lead_timbre == "power":
        lead.y = np.tanh(style.drive * lead.y / (np.abs(lead.y).max() + 1e-9))

    def unit(y: np.ndarray) -> np.ndarray:
        rms = np.sqrt(np.mean(y**2))
        return y / rms if rms > 0 else y

    gains = rng.uniform(0.7, 1.3, size=4) * np.array([1.0, 0.8, 1.0, 0.5])
    mix = sum(g * unit(track.y) for g, track in zip(gains, (drums, bass, comp, lead), strict=True))
    if style.reverb:
        ir_n = int(sr * 1.2)
        ir = rng.standard_normal(ir_n) * _decay(ir_n, sr, 0.25)
        size = 1 << int(np.ceil(np.log2(n + ir_n)))
        wet = np.fft.irfft(np.fft.rfft(mix, size) * np.fft.rfft(ir, size), size)[:n]
        mix = mix + style.reverb * unit(wet) * np.sqrt(np.mean(mix**2))
    target = style.loudness * rng.uniform(0.7, 1.3)
    mix = mix * target / max(np.sqrt(np.mean(mix**2)), 1e-12)
    return np.clip(mix, -1.0, 1.0).astype(np.float32)


def _track_rng(seed: int, genre: str, index: int) -> np.random.Generator:
    """Independent of the other genres and tracks, so adding a genre changes nothing else."""
    words = np.frombuffer(_stable_digest(genre)[:8], dtype=np.uint32)
    return np.random.default_rng([seed, *map(int, words), index])


def write_corpus(
    dest: Path,
    genres: Sequence[str],
    tracks_per_genre: int,
    seconds: float = DEFAULT_SECONDS,
    seed: int = 0,
    prefix: str = "",
) -> list[Path]:
    """Write ``dest/<genre>/<prefix><genre>_<i:03d>.wav`` (16-bit PCM); same seed, same bytes."""
    import soundfile as sf

    dest = Path(dest)
    written: list[Path] = []
    for genre in genres:
        folder = dest / genre
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(tracks_per_genre):
            y = synthesize_clip(genre, seconds, _track_rng(seed, genre, i))
            path = folder / f"{prefix}{genre}_{i:03d}.wav"
            sf.write(path, y, SAMPLE_RATE, subtype="PCM_16")
            written.append(path)
    log.info(
        "wrote %d synthetic clips (%d genres x %d, %.1f s, seed %d) under %s",
        len(written), len(genres), tracks_per_genre, seconds, seed, dest,
    )
    return written
