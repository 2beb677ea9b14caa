#!/usr/bin/env python3
"""Word-timestamp goldens: faster-whisper 1.2.1 with word_timestamps=True.

Run in the peers environment (../shared/peers/setup.sh):
    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/words/make_word_goldens.py
Writes tests/goldens/words/tiny.en/<stem>.json for jfk, the four ls-* files and the long file:
every segment (start, end, text, tokens) with its words (start, end, word, probability).
Settings: WhisperModel(~/.cache/amanuensis-peers/models/tiny.en, device="cpu",
compute_type="float32", cpu_threads=2); transcribe(wav, language="en", beam_size=1,
temperature=0, vad_filter=False, word_timestamps=True), everything else default.
tests/words.rs compares our word times against these (within 0.2 s) and the word texts.
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
FILES = [
    "jfk",
    "ls-1089-134686-0000",
    "ls-1089-134686-0001",
    "ls-1221-135766-0001",
    "ls-61-70968-0000",
    "long-lj001-0001to0020",
]
KWARGS = dict(
    language="en",
    beam_size=1,
    temperature=0,
    vad_filter=False,
    word_timestamps=True,
)


def main():
    model_name = sys.argv[1] if len(sys.argv) > 1 else "tiny.en"
    model = WhisperModel(
        os.path.join(MODELS, model_name),
        device="cpu",
        compute_type="float32",
        cpu_threads=2,
    )
    out_dir = os.path.join(HERE, model_name)
    os.makedirs(out_dir, exist_ok=True)
    for stem in FILES:
        segments, info = model.transcribe(os.path.join(SPEECH, stem + ".wav"), **KWARGS)
        segs = []
        for s in segments:
            segs.append(
                {
                    "seek": s.seek,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": list(s.tokens),
                    "words": [
                        {
                            "start": w.start,
                            "end": w.end,
                            "word": w.word,
                            "probability": round(float(w.probability), 6),
                        }
                        for w in s.words
                    ],
                }
            )
        doc = {
            "meta": {
                "model": model_name,
                "compute_type": "float32",
                "cpu_threads": 2,
                "transcribe": KWARGS,
                "versions": {
                    "faster_whisper": faster_whisper.__version__,
                    "ctranslate2": ctranslate2.__version__,
                    "numpy": np.__version__,
                    "python": sys.version.split()[0],
                },
            },
            "file": stem + ".wav",
            "duration": info.duration,
            "segments": segs,
        }
        path = os.path.join(out_dir, stem + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        n = sum(len(s["words"]) for s in segs)
        print(f"{path}: {len(segs)} segments, {n} words")


if __name__ == "__main__":
    main()
