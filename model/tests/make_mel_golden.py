#!/usr/bin/env python3
"""Writes model/tests/goldens/mel_*.json: slices of faster-whisper's log-mel for mel_golden.rs.

Run from the repository root in the peers venv:
    . ~/.cache/amanuensis-peers/venv/bin/activate
    python model/tests/make_mel_golden.py

For each speech file: the decoded samples' count, sums and a few samples (checks our WAV
decoding), the log-mel shape, 4 whole frames at the start, middle and end, and the sum over mel
bins of every frame. Also synthetic short inputs (0..1000 samples, whole log-mel stored) that
exercise numpy's reflect padding when the signal is shorter than the 200-sample pad, and the
Hann window. Floats are written as the exact float32 values (repr of the widened double).
"""
import json
import os

import numpy as np
from faster_whisper.audio import decode_audio
from faster_whisper.feature_extractor import FeatureExtractor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "model", "tests", "goldens")
FILES = ["jfk.wav", "ls-1089-134686-0000.wav"]
SLICE = 4


def f32list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def main():
    os.makedirs(OUT, exist_ok=True)
    fe = FeatureExtractor(feature_size=80)
    for name in FILES:
        path = os.path.join(ROOT, "..", "shared", "speech", name)
        audio = decode_audio(path)
        feats = fe(audio, padding=160)
        n_frames = feats.shape[1]
        starts = [0, n_frames // 2, n_frames - SLICE]
        positions = [0, 1, 1000, len(audio) // 2, len(audio) - 1]
        golden = {
            "file": "../shared/speech/" + name,
            "n_samples": len(audio),
            "sample_sum": float(np.sum(audio, dtype=np.float64)),
            "sample_abs_sum": float(np.sum(np.abs(audio), dtype=np.float64)),
            "samples_at": {str(p): float(audio[p]) for p in positions},
            "n_mels": feats.shape[0],
            "n_frames": n_frames,
            "slices": [
                {"start": s, "frames": [f32list(feats[:, t]) for t in range(s, s + SLICE)]}
                for s in starts
            ],
            "frame_sums": [float(v) for v in feats.astype(np.float64).sum(axis=0)],
        }
        out = os.path.join(OUT, "mel_" + os.path.splitext(name)[0] + ".json")
        with open(out, "w") as f:
            json.dump(golden, f, separators=(",", ":"))
        print(out, n_frames, "frames")

    rng = np.random.default_rng(20261123)
    short = []
    for n in [0, 1, 39, 40, 41, 200, 1000]:
        audio = (0.1 * rng.standard_normal(n)).astype(np.float32)
        feats = fe(audio, padding=160)
        short.append({"samples": f32list(audio), "n_frames": feats.shape[1], "mel": f32list(feats)})
    window = np.hanning(401)[:-1].astype("float32")
    out = os.path.join(OUT, "mel_short.json")
    with open(out, "w") as f:
        json.dump({"hann": f32list(window), "cases": short}, f, separators=(",", ":"))
    print(out)


if __name__ == "__main__":
    main()
