#!/usr/bin/env python3
"""Writer goldens for segments with words: openai-whisper's own srt/vtt writers with
highlight_words, max_line_width, max_line_count and max_words_per_line.

Run with the openai-whisper package installed (pip install openai-whisper==20250625; the peers
venv has it):
    python3 tests/goldens/writers/make_word_writer_goldens.py
Input: the word goldens of tests/goldens/words/tiny.en (jfk and the long file, as faster-whisper
wrote them) plus hand-made segments with edge cases (a pause over 3 s, a long word, a
line-break-worthy run, punctuation, non-ASCII); all segments with their words go to
words/segments.json. Output: words/<case>.srt and words/<case>.vtt per option set in CASES;
tests/writers.rs renders words/segments.json with our writers and compares the bytes.
"""
import importlib.util
import json
import os

_spec = importlib.util.find_spec("whisper")
_utils_path = os.path.join(os.path.dirname(_spec.origin), "utils.py")
_utils_spec = importlib.util.spec_from_file_location("whisper_utils", _utils_path)
whisper_utils = importlib.util.module_from_spec(_utils_spec)
_utils_spec.loader.exec_module(whisper_utils)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "words")
WORD_GOLDENS = os.path.join(HERE, "..", "words", "tiny.en")

CASES = {
    "plain": {},
    "highlight": {"highlight_words": True},
    "width20": {"max_line_width": 20},
    "width20_count2": {"max_line_width": 20, "max_line_count": 2},
    "width42_count1_highlight": {
        "max_line_width": 42,
        "max_line_count": 1,
        "highlight_words": True,
    },
    "words3": {"max_words_per_line": 3},
    "words4_width20_count2": {
        "max_words_per_line": 4,
        "max_line_width": 20,
        "max_line_count": 2,
    },
}


def word(w, s, e, p=0.9):
    return {"word": w, "start": s, "end": e, "probability": p}


HANDMADE = [
    {
        "start": 200.0,
        "end": 203.5,
        "text": " \"Well,\" she said — café?",
        "words": [
            word(" \"Well,\"", 200.0, 200.4),
            word(" she", 200.4, 200.6),
            word(" said", 200.6, 201.0),
            word(" —", 201.0, 201.1),
            word(" café?", 201.1, 203.5),
        ],
    },
    {
        # more than 3 s after the previous word: a new cue when segments are not preserved
        "start": 207.0,
        "end": 209.0,
        "text": " Supercalifragilisticexpialidocious is long.",
        "words": [
            word(" Supercalifragilisticexpialidocious", 207.0, 208.2),
            word(" is", 208.2, 208.4),
            word(" long.", 208.4, 209.0),
        ],
    },
    {
        "start": 3599.9,
        "end": 3601.0,
        "text": " Past the hour.",
        "words": [
            word(" Past", 3599.9, 3600.2),
            word(" the", 3600.2, 3600.5),
            word(" hour.", 3600.5, 3601.0),
        ],
    },
]


def main():
    segments = []
    # jfk, then the long file 12 s later (no overlap)
    for stem in ["jfk", "long-lj001-0001to0020"]:
        with open(os.path.join(WORD_GOLDENS, stem + ".json"), encoding="utf-8") as f:
            doc = json.load(f)
        offset = 0.0 if stem == "jfk" else 12.0
        # the long file's first 8 segments are enough (highlighting repeats every cue's text)
        for s in doc["segments"][:8]:
            segments.append(
                {
                    "start": s["start"] + offset,
                    "end": s["end"] + offset,
                    "text": s["text"],
                    "words": [
                        word(w["word"], w["start"] + offset, w["end"] + offset, w["probability"])
                        for w in s["words"]
                    ],
                }
            )
    segments.extend(HANDMADE)
    for i, s in enumerate(segments):
        s["id"] = i
    result = {"text": "".join(s["text"] for s in segments), "segments": segments, "language": "en"}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "segments.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": CASES, "segments": segments}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for name, options in CASES.items():
        for cls in (whisper_utils.WriteSRT, whisper_utils.WriteVTT):
            w = cls(OUT)
            path = os.path.join(OUT, f"{name}.{cls.extension}")
            with open(path, "w", encoding="utf-8") as f:
                w.write_result(result, file=f, **options)
    print(f"{len(segments)} segments, {len(CASES)} cases -> {OUT}")


if __name__ == "__main__":
    main()
