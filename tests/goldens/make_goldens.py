#!/usr/bin/env python3
"""Regenerate the faster-whisper golden values under tests/goldens/.

Run from anywhere, in the peers venv (../shared/peers/setup.sh):

    . ~/.cache/amanuensis-peers/venv/bin/activate
    python tests/goldens/make_goldens.py [--models tiny.en,base] [--no-transcripts]

Reference settings (docs/whisper.md, "Reference outputs"):
    WhisperModel(dir, device="cpu", compute_type="float32", cpu_threads=2)
    transcribe(wav, language="en", beam_size=1, temperature=0, vad_filter=False)
everything else default (timestamps on, condition_on_previous_text on, no VAD, no word timestamps).

Writes, per model:
  * tests/goldens/<model>/<wav stem>.json for the golden files (GOLDEN_FILES): audio facts,
    whole-file normalised log-mel (shape, stats, every frame's sum, 12 full frames), the CTranslate2
    encoder output of the first 30 s window (shape, every frame's L2 norm, 8 full frames),
    every segment (tokens with timestamps, log-prob, no-speech prob, ...), the joined text;
  * tests/goldens/fw_<model without dots>_greedy.tsv: file<TAB>transcript for every file of
    ../shared/speech/refs.tsv (segments' text stripped and joined with one space, as fw_bench.py);
  * tests/goldens/fw_wer.json: corpus WER of those transcripts with wer_util.py (whisper's
    EnglishTextNormalizer + jiwer), per model;
  * tests/goldens/normalizer_cases.tsv: raw<TAB>EnglishTextNormalizer(raw) for every reference and
    every transcript, so the Rust normaliser can be checked string by string without Python;
  * tests/goldens/english_spelling.json: a copy of openai-whisper's normalizers/english.json (MIT
    licence; the British->American spelling table of EnglishSpellingNormalizer), read by the Rust
    normaliser in tests/common.
Floats are rounded to 7 significant digits (per-frame mel sums to 6).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))  # tests/goldens
ROOT = os.path.dirname(os.path.dirname(HERE))  # repo root
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SPEECH = os.path.join(SHARED, "speech")
MODELS = os.path.expanduser("~/.cache/amanuensis-peers/models")
sys.path.insert(0, os.path.join(SHARED, "peers"))
import wer_util  # noqa: E402

GOLDEN_FILES = {
    "tiny.en": [
        "jfk.wav",
        "ls-1089-134686-0000.wav",
        "ls-1089-134686-0001.wav",
        "ls-1221-135766-0001.wav",
        "ls-61-70968-0000.wav",
        "lj-LJ001-0001.wav",
        "lj-LJ001-0002.wav",
        "long-lj001-0001to0020.wav",
    ],
    "base": ["jfk.wav", "long-lj001-0001to0020.wav"],
}
ENCODER_FRAMES = [0, 1, 2, 100, 500, 749, 1000, 1499]
TRANSCRIBE_KW = dict(language="en", beam_size=1, temperature=0, vad_filter=False)
CPU_THREADS = 2


def r7(x):
    return float("%.7g" % float(x))


def r6(x):
    return float("%.6g" % float(x))


def mel_golden(feats, content_frames):
    """feats: (n_mels, content_frames + 1) float32, exactly faster_whisper's feature extractor output."""
    n = feats.shape[1]
    f64 = feats.astype(np.float64)
    mid = n // 2 - 2
    picks = list(range(0, 4)) + list(range(mid, mid + 4)) + list(range(n - 4, n))
    return {
        "shape": list(feats.shape),
        "content_frames": content_frames,
        "min": r7(f64.min()),
        "max": r7(f64.max()),
        "mean": r7(f64.mean()),
        "std": r7(f64.std()),
        "frame_sums": [r6(s) for s in f64.sum(axis=0)],
        "frames": [{"index": i, "values": [r7(v) for v in feats[:, i]]} for i in picks],
    }


def encoder_golden(model, feats, content_frames):
    """First window exactly as generate_segments builds it: features[:, seek:seek+segment_size]
    with segment_size = min(3000, content_frames - seek) (the extra last frame is NOT included),
    then pad_or_trim (np.pad with zeros in the normalised-mel domain) to 3000 frames."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim

    seek = 0
    segment_size = min(model.feature_extractor.nb_max_frames, content_frames - seek)
    window = pad_or_trim(feats[:, seek : seek + segment_size])
    # same call as WhisperModel.encode: (1, n_mels, 3000) float32 contiguous -> StorageView
    x = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.expand_dims(window, 0)))
    out = np.array(model.model.encode(x, to_cpu=True))  # (1, 1500, d) float32
    assert out.dtype == np.float32, out.dtype
    norms = np.linalg.norm(out[0].astype(np.float64), axis=1)
    return {
        "window_seek": seek,
        "window_frames": segment_size,
        "shape": list(out.shape),
        "frame_norms": [r7(v) for v in norms],
        "frames": [{"index": i, "values": [r7(v) for v in out[0, i]]} for i in ENCODER_FRAMES],
    }


def segment_golden(s):
    return {
        "id": s.id,
        "seek": s.seek,
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "tokens": list(s.tokens),
        "avg_logprob": r7(s.avg_logprob),
        "no_speech_prob": r7(s.no_speech_prob),
        "temperature": s.temperature,
        "compression_ratio": r7(s.compression_ratio),
    }


def copy_spelling_table():
    import importlib.util
    import shutil

    src = os.path.join(os.path.dirname(importlib.util.find_spec("whisper").origin), "normalizers", "english.json")
    shutil.copyfile(src, os.path.join(HERE, "english_spelling.json"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--no-transcripts", action="store_true", help="only the per-file JSON goldens")
    a = ap.parse_args()

    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    versions = {
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": ctranslate2.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    copy_spelling_table()
    refs = wer_util.read_refs(os.path.join(SPEECH, "refs.tsv"))
    wer_path = os.path.join(HERE, "fw_wer.json")
    wers = json.load(open(wer_path)) if os.path.exists(wer_path) else {}
    norm_cases = {}
    for model_name in a.models.split(","):
        mdir = os.path.join(MODELS, model_name)
        model = WhisperModel(mdir, device="cpu", compute_type="float32", cpu_threads=CPU_THREADS)
        outdir = os.path.join(HERE, model_name)
        os.makedirs(outdir, exist_ok=True)
        files = [f for f, _ in refs] if not a.no_transcripts else GOLDEN_FILES[model_name]
        hyps = {}
        for f in files:
            wav = os.path.join(SPEECH, f)
            t0 = time.perf_counter()
            segs, info = model.transcribe(wav, **TRANSCRIBE_KW)
            segs = list(segs)
            wall = time.perf_counter() - t0
            hyps[f] = " ".join(s.text.strip() for s in segs).replace("\t", " ").replace("\n", " ")
            print("%-8s %-30s %6.1fs audio, %5.1fs wall | %s" % (model_name, f, info.duration, wall, hyps[f][:60]),
                  flush=True)
            if f not in GOLDEN_FILES.get(model_name, []):
                continue
            audio = decode_audio(wav, sampling_rate=16000)  # what transcribe() decodes
            feats = model.feature_extractor(audio)  # padding=160, as transcribe()
            content_frames = feats.shape[-1] - 1
            assert content_frames == len(audio) // 160
            g = {
                "meta": {
                    "model": model_name,
                    "compute_type": "float32",
                    "cpu_threads": CPU_THREADS,
                    "transcribe": TRANSCRIBE_KW,
                    "versions": versions,
                },
                "audio": {"file": f, "n_samples": int(len(audio)), "content_frames": int(content_frames)},
                "mel": mel_golden(feats, content_frames),
                "encoder": encoder_golden(model, feats, content_frames),
                "segments": [segment_golden(s) for s in segs],
                "text": "".join(s.text for s in segs),
            }
            path = os.path.join(outdir, os.path.splitext(f)[0] + ".json")
            with open(path, "w") as fo:
                json.dump(g, fo, separators=(",", ":"))
                fo.write("\n")
            print("  wrote %s (%d bytes)" % (os.path.relpath(path, ROOT), os.path.getsize(path)), flush=True)
        if a.no_transcripts:
            continue
        tsv = os.path.join(HERE, "fw_%s_greedy.tsv" % model_name.replace(".", "_"))
        with open(tsv, "w", encoding="utf-8") as fo:
            for f, _ in refs:
                fo.write("%s\t%s\n" % (f, hyps[f]))
        w = wer_util.corpus_wer([r for _, r in refs], [hyps[f] for f, _ in refs])
        wers[model_name] = {
            "normalizer": wer_util.NORMALIZER_NAME,
            "wer_percent": round(100 * w["wer"], 4),
            **{k: w[k] for k in ("errors", "ref_words", "sub", "del", "ins")},
            "files": len(refs),
            "versions": versions,
        }
        print("%s WER %.2f%% (%d/%d)" % (model_name, 100 * w["wer"], w["errors"], w["ref_words"]), flush=True)
        for f, r in refs:
            norm_cases[r] = wer_util.normalize(r)
            norm_cases[hyps[f]] = wer_util.normalize(hyps[f])
    if not a.no_transcripts:
        with open(wer_path, "w") as fo:
            json.dump(wers, fo, indent=1, sort_keys=True)
            fo.write("\n")
        path = os.path.join(HERE, "normalizer_cases.tsv")
        old = {}
        if os.path.exists(path):  # keep cases of models not re-run this time
            for line in open(path, encoding="utf-8"):
                k, v = line.rstrip("\n").split("\t", 1)
                old[k] = v
        old.update(norm_cases)
        with open(path, "w", encoding="utf-8") as fo:
            for k in sorted(old):
                fo.write("%s\t%s\n" % (k, old[k]))


if __name__ == "__main__":
    main()
