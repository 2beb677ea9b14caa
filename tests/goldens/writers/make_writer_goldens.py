#!/usr/bin/env python3
"""Writer goldens: the same segments written by openai-whisper's own writers.

Run with the openai-whisper package installed (pip install openai-whisper==20250625):
    python3 tests/goldens/writers/make_writer_goldens.py
Writes segments.json (the input) and segments.{txt,vtt,srt,tsv,json} (whisper.utils.get_writer
output) beside this script; tests/writers.rs renders segments.json with our writers and compares
the bytes of txt, vtt, srt and tsv.
"""
import importlib.util
import json
import os

# whisper/__init__.py imports torch; the writers (whisper/utils.py) need only the standard
# library, so load that one module from the installed package without the package's __init__.
_spec = importlib.util.find_spec("whisper")
_utils_path = os.path.join(os.path.dirname(_spec.origin), "utils.py")
_utils_spec = importlib.util.spec_from_file_location("whisper_utils", _utils_path)
whisper_utils = importlib.util.module_from_spec(_utils_spec)
_utils_spec.loader.exec_module(whisper_utils)
get_writer = whisper_utils.get_writer

HERE = os.path.dirname(os.path.abspath(__file__))

# Edge cases: half-millisecond ties (Python rounds half to even), hours, "-->" and tabs in the
# text, whitespace Python strips (U+001C..U+001F, no-break space), non-ASCII, long times.
SEGMENTS = [
    (0.0, 2.5, " Hello there."),
    (2.5, 4.0125, "  Ties: 4.0125 s is 4012.5 ms.  "),
    (4.0135, 7.74, "\u00a0Arrows --> become -> here\u00a0"),
    (7.74, 9.0, "\ttabs\tinside\t"),
    (9.0, 10.0005, "\u001cinformation separators\u001f"),
    (59.9995, 61.25, " Caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, \U0001f600."),
    (3599.9996, 3661.2506, " Past an hour."),
    (36000.0, 36001.001, " Ten hours."),
    (0.1 + 0.2, 1.0 / 3.0, " Floats that are not short decimals."),
]


def main():
    segments = [
        {
            "id": i,
            "seek": 0,
            "start": start,
            "end": end,
            "text": text,
            "tokens": [50364 + i],
            "temperature": 0.0,
            "avg_logprob": -0.25,
            "compression_ratio": 1.5,
            "no_speech_prob": 0.01,
        }
        for i, (start, end, text) in enumerate(SEGMENTS)
    ]
    result = {
        "text": "".join(s["text"] for s in segments),
        "segments": segments,
        "language": "en",
    }
    with open(os.path.join(HERE, "segments.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    writer = get_writer("all", HERE)
    writer(result, os.path.join(HERE, "segments.wav"), {})


if __name__ == "__main__":
    main()
