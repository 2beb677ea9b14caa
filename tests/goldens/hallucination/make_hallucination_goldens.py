#!/usr/bin/env python3
"""hallucination_silence_threshold goldens: faster-whisper 1.2.1 on speech around noise.

Run in the peers environment (../shared/peers/setup.sh):
    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/hallucination/make_hallucination_goldens.py
The audio is built here and again by tests/hallucination.rs, sample for sample (nothing is
stored): ls-1089-134686-0000.wav, NOISE_SECONDS of 16-bit noise from the LCG below, then
ls-61-70968-0000.wav, as 16-bit samples / 32768 (what faster-whisper's decoder gives for a
16-bit WAV). Writes tests/goldens/hallucination/tiny.en.json: the segments (start, end, text)
for each threshold in THRESHOLDS (null = off).
Settings: WhisperModel(~/.cache/amanuensis-peers/models/tiny.en, device="cpu",
compute_type="float32", cpu_threads=2); transcribe(audio, language="en", beam_size=1,
temperature=0, vad_filter=False, word_timestamps=True, hallucination_silence_threshold=T),
everything else default.
"""
import json
import os
import sys
import wave

import ctranslate2
import faster_whisper
import numpy as np
from faster_whisper import WhisperModel

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "shared"))
SPEECH = os.path.join(SHARED, "speech")
MODELS = os.path.expanduser("~/.cache/amanuensis-peers/models")
BEFORE, AFTER = "ls-1089-134686-0000", "ls-61-70968-0000"
NOISE_SECONDS = 20
NOISE_AMPLITUDE = 200
THRESHOLDS = [None, 2.0]


def read16(stem):
    with wave.open(os.path.join(SPEECH, stem + ".wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def lcg_noise(n, amplitude, seed=1):
    """Uniform integers in [-amplitude, amplitude] from the ANSI C LCG (31-bit state)."""
    out = np.empty(n, dtype=np.int16)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = ((x >> 8) % (2 * amplitude + 1)) - amplitude
    return out


def main():
    samples = np.concatenate(
        [read16(BEFORE), lcg_noise(16000 * NOISE_SECONDS, NOISE_AMPLITUDE), read16(AFTER)]
    )
    audio = samples.astype(np.float32) / 32768.0
    model = WhisperModel(
        os.path.join(MODELS, "tiny.en"), device="cpu", compute_type="float32", cpu_threads=2
    )
    runs = []
    for threshold in THRESHOLDS:
        kwargs = dict(
            language="en",
            beam_size=1,
            temperature=0,
            vad_filter=False,
            word_timestamps=True,
            hallucination_silence_threshold=threshold,
        )
        segments, _ = model.transcribe(audio, **kwargs)
        runs.append(
            {
                "threshold": threshold,
                "segments": [
                    {"seek": s.seek, "start": s.start, "end": s.end, "text": s.text}
                    for s in segments
                ],
            }
        )
    doc = {
        "meta": {
            "model": "tiny.en",
            "compute_type": "float32",
            "cpu_threads": 2,
            "audio": {
                "before": BEFORE + ".wav",
                "noise_seconds": NOISE_SECONDS,
                "noise_amplitude": NOISE_AMPLITUDE,
                "after": AFTER + ".wav",
            },
            "versions": {
                "faster_whisper": faster_whisper.__version__,
                "ctranslate2": ctranslate2.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            },
        },
        "runs": runs,
    }
    path = os.path.join(HERE, "tiny.en.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1, default=float)
        f.write("\n")
    for r in runs:
        print(r["threshold"], [(round(s["start"], 2), s["text"]) for s in r["segments"]])


if __name__ == "__main__":
    main()
