#!/usr/bin/env python3
"""Writes tests/data/mel_ref.json: faster-whisper's mel filterbank, cast to float32.

Run in the peers venv (. ~/.cache/amanuensis-peers/venv/bin/activate):
    python weights-tools/tests/make_mel_ref.py > weights-tools/tests/data/mel_ref.json
For n_mels 80 and 128 (n_fft 400, 16 kHz): every non-zero value of a few rows as
[bin, float32 bit pattern] and every row's sum (float64 sum of the float32 values).
Also checks the filters against librosa if it is installed.
"""
import json

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

out = {"n_fft": 400, "sample_rate": 16000, "sets": []}
for n_mels, rows in ((80, [0, 1, 2, 10, 39, 40, 78, 79]), (128, [0, 64, 127])):
    f64 = FeatureExtractor.get_mel_filters(16000, 400, n_mels=n_mels)
    assert f64.dtype == np.float64 and f64.shape == (n_mels, 201)
    f32 = f64.astype(np.float32)
    if n_mels == 80:
        assert np.array_equal(FeatureExtractor(feature_size=80).mel_filters.astype(np.float32), f32)
    try:
        import librosa

        ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
        assert np.abs(ref - f32).max() <= np.abs(f32).max() * 2**-23
    except ImportError:
        pass
    out["sets"].append(
        {
            "n_mels": n_mels,
            "rows": {
                str(r): [[int(k), int(f32[r, k].view(np.uint32))] for k in np.nonzero(f32[r])[0]]
                for r in rows
            },
            "row_sums": [float(s) for s in f32.astype(np.float64).sum(axis=1)],
        }
    )
print(json.dumps(out))
