#!/usr/bin/env python3
"""Regenerate tests/goldens/compression/zlib_lengths.tsv: Python's len(zlib.compress(text)) for
the texts the fallback's compression ratio sees (faster-whisper's get_compression_ratio:
len(utf-8 bytes) / len(zlib.compress(bytes)), default level).

Texts: every reference transcript of ../shared/speech/refs.tsv and its 12-word pieces, phrases
Whisper hallucinates repeated 1..37 times, those repeats followed by real text, random word
salads (seeded), the empty string and non-ASCII text. Plain python3, no venv needed.

Columns: utf-8 byte length, zlib length, text (newlines as \\n).
"""
import os
import random
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REFS = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "shared", "speech", "refs.tsv"))


def texts():
    rng = random.Random(1)
    out = []
    for line in open(REFS, encoding="utf-8"):
        t = line.rstrip("\n").split("\t")[-1]
        out.append(t)
        w = t.split()
        for i in range(0, len(w), 7):
            out.append(" ".join(w[i : i + 12]))
    phrases = ["you", "Thank you.", "I'm going to go to the store.", "Okay.", "the", "So,",
               "Bye!", "...", "Thank you for watching!", "Oh", "and the", "- I don't know."]
    for p in phrases:
        for n in range(1, 41, 4):
            out.append(" ".join([p] * n))
        for n in range(1, 30, 7):
            out.append(" ".join([p] * n) + " " + rng.choice(out[:20]))
    words = " ".join(out[:30]).split()
    for _ in range(60):
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 80))))
    out.append("")
    out.append("héllo wörld ünïcode — “quotes” 日本語")
    return [t.strip() for t in out]


def main():
    with open(os.path.join(HERE, "zlib_lengths.tsv"), "w", encoding="utf-8") as f:
        for t in texts():
            b = t.encode("utf-8")
            f.write(f"{len(b)}\t{len(zlib.compress(b))}\t{t}\n")


if __name__ == "__main__":
    main()
