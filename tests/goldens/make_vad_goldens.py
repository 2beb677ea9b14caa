#!/usr/bin/env python3
"""Regenerate the Silero VAD goldens under tests/goldens/vad/.

Run in the peers venv (faster-whisper 1.2.1 and onnxruntime):

    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/make_vad_goldens.py

Reference: faster-whisper's own VAD, `faster_whisper.vad.get_vad_model()` (onnxruntime on its
bundled assets/silero_vad_v6.onnx, 1 thread) called exactly as `get_speech_timestamps` calls it
(audio zero-padded by 512 - len % 512), and `get_speech_timestamps(audio, VadOptions())` for the
speech stretches with the default options (threshold 0.5, min speech 0 ms, min silence 2000 ms,
pad 400 ms).

Inputs: every WAV of ../shared/speech (decoded with faster_whisper.decode_audio, as transcribe()
does) and the synthetic signals of `synthetic()` below, which tests/common/signals.rs rebuilds
sample for sample in Rust (30 s of digital silence, white noise, steady tones, jfk + 60 s of
silence).

Writes tests/goldens/vad/<name>.json: {name, n_samples, probs (one per 512-sample chunk, 6
decimals), chunks ([start, end] samples), versions}; and tests/goldens/vad/fw_vad_filter_tiny_en.json:
faster-whisper's segments (start, end, text, tokens) with vad_filter=True (default VadOptions),
tiny.en float32, beam 1, temperature 0, for VAD_FILTER_FILES.
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SPEECH = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "speech"))
OUT = os.path.join(HERE, "vad")
SR = 16000


def white_noise(n, seed=0x9E3779B9, amplitude=0.1):
    """xorshift32 → top 16 bits → uniform in [-amplitude, amplitude)."""
    x = seed
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = ((x >> 16) - 32768) / 32768.0 * amplitude
    return out.astype(np.float32)


def tones(n):
    """Three 10 s steady tones (for 30 s): 440 Hz, 1 kHz, then 250 Hz + 2 kHz; amplitude 0.3."""
    t = np.arange(n, dtype=np.float64)
    third = n // 3
    f = np.where(t < third, 440.0, 1000.0)
    y = 0.3 * np.sin(2 * np.pi * f * t / SR)
    mix = 0.15 * np.sin(2 * np.pi * 250.0 * t / SR) + 0.15 * np.sin(2 * np.pi * 2000.0 * t / SR)
    y = np.where(t < 2 * third, y, mix)
    return y.astype(np.float32)


def synthetic(decode_audio):
    n = 30 * SR
    jfk = decode_audio(os.path.join(SPEECH, "jfk.wav"), sampling_rate=SR)
    return {
        "silence-30s": np.zeros(n, dtype=np.float32),
        "white-noise-30s": white_noise(n),
        "tones-30s": tones(n),
        "jfk-silence-60s": np.concatenate([jfk, np.zeros(60 * SR, dtype=np.float32)]),
    }


VAD_FILTER_FILES = ["jfk-silence-60s", "ls-1089-134686-0000", "ls-1089-134686-0001"]
MODEL = os.path.expanduser("~/.cache/amanuensis-peers/models/tiny.en")


def vad_filter_goldens(inputs):
    from faster_whisper import WhisperModel

    model = WhisperModel(MODEL, device="cpu", compute_type="float32", cpu_threads=2)
    doc = {}
    for name in VAD_FILTER_FILES:
        segments, _ = model.transcribe(
            inputs[name], language="en", beam_size=1, temperature=0, vad_filter=True
        )
        doc[name] = [
            {"start": s.start, "end": s.end, "text": s.text, "tokens": s.tokens} for s in segments
        ]
    with open(os.path.join(OUT, "fw_vad_filter_tiny_en.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


def main():
    import faster_whisper
    import onnxruntime
    from faster_whisper.audio import decode_audio
    from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

    model = get_vad_model()
    inputs = {}
    for f in sorted(os.listdir(SPEECH)):
        if f.endswith(".wav"):
            inputs[f[:-4]] = decode_audio(os.path.join(SPEECH, f), sampling_rate=SR)
    inputs.update(synthetic(decode_audio))
    os.makedirs(OUT, exist_ok=True)
    versions = {
        "faster_whisper": faster_whisper.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
    for name, audio in inputs.items():
        padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
        probs = model(padded)
        chunks = get_speech_timestamps(audio, VadOptions())
        doc = {
            "name": name,
            "n_samples": int(audio.shape[0]),
            "probs": [round(float(p), 6) for p in probs],
            "chunks": [[int(c["start"]), int(c["end"])] for c in chunks],
            "versions": versions,
        }
        with open(os.path.join(OUT, name + ".json"), "w") as fh:
            json.dump(doc, fh, separators=(",", ":"))
            fh.write("\n")
        print(name, len(probs), doc["chunks"])
    vad_filter_goldens(inputs)


if __name__ == "__main__":
    main()
