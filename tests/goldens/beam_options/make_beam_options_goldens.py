#!/usr/bin/env python3
"""Beam search patience and length penalty goldens: faster-whisper 1.2.1, beam_size 5.

Run in the peers environment (../shared/peers/setup.sh):
    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/beam_options/make_beam_options_goldens.py
Writes tests/goldens/beam_options/tiny.en.json: for each (patience, length_penalty) of
OPTIONS and each file of FILES, the segments' tokens, texts and avg_logprob, and which runs
differ from the default (1, 1).
Settings: WhisperModel(~/.cache/amanuensis-peers/models/tiny.en, device="cpu",
compute_type="float32", cpu_threads=2); transcribe(wav, language="en", beam_size=5,
patience=P, length_penalty=L, temperature=0, vad_filter=False), everything else default.
"""
import json
import os
import sys

import ctranslate2
import faster_whisper
import numpy as np
from faster_whisper import WhisperModel

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "shared"))
SPEECH = os.path.join(SHARED, "speech")
MODELS = os.path.expanduser("~/.cache/amanuensis-peers/models")
FILES = sys.argv[1:] or [
    "jfk",
    "ls-1089-134686-0000",
    "ls-1089-134686-0001",
    "ls-1221-135766-0001",
    "ls-61-70968-0000",
    "lj-LJ001-0001",
    "lj-LJ001-0002",
    "lj-LJ001-0008",
]
OPTIONS = [(1.0, 1.0), (2.0, 1.0), (1.0, 0.0), (0.6, 0.5), (1.5, 2.0)]


def main():
    model = WhisperModel(
        os.path.join(MODELS, "tiny.en"), device="cpu", compute_type="float32", cpu_threads=2
    )
    runs = []
    for patience, length_penalty in OPTIONS:
        for stem in FILES:
            segments, _ = model.transcribe(
                os.path.join(SPEECH, stem + ".wav"),
                language="en",
                beam_size=5,
                patience=patience,
                length_penalty=length_penalty,
                temperature=0,
                vad_filter=False,
            )
            segs = [
                {"text": s.text, "tokens": list(s.tokens), "avg_logprob": s.avg_logprob}
                for s in segments
            ]
            runs.append(
                {
                    "file": stem + ".wav",
                    "patience": patience,
                    "length_penalty": length_penalty,
                    "segments": segs,
                }
            )
    default = {r["file"]: r["segments"] for r in runs if (r["patience"], r["length_penalty"]) == (1.0, 1.0)}
    for r in runs:
        tokens = [s["tokens"] for s in r["segments"]]
        r["differs_from_default"] = tokens != [s["tokens"] for s in default[r["file"]]]
        if r["differs_from_default"]:
            print(r["file"], r["patience"], r["length_penalty"], "differs:", " ".join(s["text"] for s in r["segments"])[:200])
    doc = {
        "meta": {
            "model": "tiny.en",
            "compute_type": "float32",
            "cpu_threads": 2,
            "beam_size": 5,
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


if __name__ == "__main__":
    main()
