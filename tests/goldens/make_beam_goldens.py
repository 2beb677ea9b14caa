#!/usr/bin/env python3
"""Regenerate the faster-whisper beam-search goldens: tests/goldens/fw_<model>_beam5.json.

Run in the peers venv (../shared/peers/setup.sh):

    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/make_beam_goldens.py

Settings: as make_goldens.py (float32, 2 threads, language "en", temperature 0, no VAD) but
beam_size=5 (faster-whisper's default; patience 1, length penalty 1). For each file: every
segment's tokens (timestamps included), start, end, text and avg_logprob (rounded to 7
significant digits).
"""
import json
import os

from faster_whisper import WhisperModel

HERE = os.path.dirname(os.path.abspath(__file__))
SPEECH = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "speech"))
MODELS = os.path.expanduser("~/.cache/amanuensis-peers/models")
FILES = {
    "tiny.en": [
        "jfk.wav",
        "ls-1089-134686-0000.wav",
        "ls-1221-135766-0001.wav",
        "lj-LJ001-0001.wav",
        "long-lj001-0001to0020.wav",
    ],
    "base": ["jfk.wav", "ls-1221-135766-0001.wav"],
}


def main():
    for model_name, files in FILES.items():
        model = WhisperModel(os.path.join(MODELS, model_name), device="cpu",
                             compute_type="float32", cpu_threads=2)
        out = {}
        for f in files:
            segments, _ = model.transcribe(os.path.join(SPEECH, f), language="en", beam_size=5,
                                           temperature=0, vad_filter=False)
            out[f] = [{"tokens": s.tokens, "start": s.start, "end": s.end, "text": s.text,
                       "avg_logprob": float("%.7g" % s.avg_logprob)} for s in segments]
        path = os.path.join(HERE, "fw_%s_beam5.json" % model_name.replace(".", "_"))
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
            fh.write("\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
