#!/usr/bin/env python3
"""clip_timestamps goldens: faster-whisper 1.2.1 transcribing only some clips of a file.

Run in the peers environment (../shared/peers/setup.sh):
    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/clips/make_clip_goldens.py
Writes tests/goldens/clips/tiny.en.json: for each (file, clip_timestamps) of CASES, the
segments (seek, start, end, text, tokens).
Settings: WhisperModel(~/.cache/amanuensis-peers/models/tiny.en, device="cpu",
compute_type="float32", cpu_threads=2); transcribe(wav, language="en", beam_size=1,
temperature=0, vad_filter=False, clip_timestamps=C), everything else default.
tests/clips.rs asks the f32 path for the same tokens.
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
CASES = [
    # Three clips, the last open: windows end at each clip's end, prompts carry over.
    ("long-lj001-0001to0020.wav", "10,40,70.5,90,130"),
    # One clip inside a short file, cut mid-word.
    ("jfk.wav", "2.5,7.25"),
]


def main():
    model = WhisperModel(
        os.path.join(MODELS, "tiny.en"), device="cpu", compute_type="float32", cpu_threads=2
    )
    cases = []
    for file, clips in CASES:
        segments, _ = model.transcribe(
            os.path.join(SPEECH, file),
            language="en",
            beam_size=1,
            temperature=0,
            vad_filter=False,
            clip_timestamps=clips,
        )
        segs = [
            {
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": list(s.tokens),
            }
            for s in segments
        ]
        cases.append({"file": file, "clip_timestamps": clips, "segments": segs})
        print(file, clips, [(s["start"], s["end"], s["text"]) for s in segs])
    doc = {
        "meta": {
            "model": "tiny.en",
            "compute_type": "float32",
            "cpu_threads": 2,
            "versions": {
                "faster_whisper": faster_whisper.__version__,
                "ctranslate2": ctranslate2.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            },
        },
        "cases": cases,
    }
    path = os.path.join(HERE, "tiny.en.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1, default=float)
        f.write("\n")


if __name__ == "__main__":
    main()
