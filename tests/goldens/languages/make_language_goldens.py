#!/usr/bin/env python3
"""Language-detection goldens: espeak-ng speech in French, German and Spanish, and what
faster-whisper (base, CTranslate2 float32) detects and decodes in the first window.

Needs espeak-ng and sox (apt-get install espeak-ng sox) and faster-whisper with the base model
converted by scripts/setup-models.sh (~/.cache/amanuensis/ct2/base). Run:
    python3 tests/goldens/languages/make_language_goldens.py
Writes {fr,de,es}.flac (16 kHz mono 16-bit, lossless, a few tens of KB) and languages.json:
per file the detected language, its probability and the first window's tokens (greedy,
temperature 0, without conditioning: the tokens of the first window equal transcribe()'s).
"""
import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.expanduser(
    os.environ.get("AMANUENSIS_CT2_BASE", "~/.cache/amanuensis/ct2/base")
)

TEXTS = {
    "fr": ("fr", "Le gouvernement français a annoncé une nouvelle loi."),
    "de": ("de", "Die deutsche Regierung hat ein neues Gesetz angekündigt."),
    "es": ("es", "El gobierno español ha anunciado una nueva ley."),
}


def main():
    from faster_whisper import WhisperModel

    model = WhisperModel(MODEL, device="cpu", compute_type="float32")
    out = {}
    for name, (voice, text) in TEXTS.items():
        flac = os.path.join(HERE, f"{name}.flac")
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "speech.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", wav, text], check=True)
            subprocess.run(
                ["sox", wav, "-r", "16000", "-c", "1", "-b", "16", "-C", "8", flac], check=True
            )
        segments, info = model.transcribe(
            flac,
            beam_size=1,
            temperature=0,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        segments = list(segments)
        first_seek = segments[0].seek if segments else 0
        tokens = [t for s in segments if s.seek == first_seek for t in s.tokens]
        out[name] = {
            "language": info.language,
            "language_probability": info.language_probability,
            "first_window_tokens": tokens,
            "text": "".join(s.text for s in segments),
        }
        print(name, info.language, round(info.language_probability, 4), out[name]["text"])
    with open(os.path.join(HERE, "languages.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
