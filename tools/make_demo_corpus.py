"""Build the bundled demo corpus (nanoflow_jax/data/demo_corpus) in LJSpeech layout, offline.

    apt-get install festival festvox-us-slt-hts festvox-kallpc16k
    python tools/make_demo_corpus.py

Speech comes from festival's text2wave with two voices from Debian main: the HTS voice trained on CMU
ARCTIC's speaker SLT (festvox-us-slt-hts) and the diphone voice of a real US English speaker
(festvox-kallpc16k). Each sentence is synthesised, resampled to 22,050 Hz, peak-normalised to 0.6 and
written as 16-bit PCM. Their licences are copied next to the corpus (LICENSES/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from math import gcd

import numpy as np
from scipy.signal import resample_poly

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nanoflow_jax", "data", "demo_corpus")
SR = 22050
VOICES = {"SLT": "voice_cmu_us_slt_arctic_hts", "KAL": "voice_kal_diphone"}
LICENSE_DOCS = {"festvox-us-slt-hts": "SLT", "festvox-kallpc16k": "KAL", "festival": "festival"}

SENTENCES = [
    "The river was quiet before the storm arrived.",
    "Please bring the blue folder to the second meeting.",
    "A small boat drifted past the old stone bridge.",
    "We measured the temperature every hour during the night.",
    "Nobody expected the train to leave so early.",
    "The garden smelled of rain and fresh cut grass.",
    "She counted seven birds on the telephone wire.",
    "His letter arrived three weeks after he had returned.",
    "The library closes at nine on weekdays.",
    "Turn left at the bakery and walk two blocks.",
    "The children built a tower from wooden blocks.",
    "A cold wind blew across the empty parking lot.",
    "They painted the kitchen a pale shade of yellow.",
    "The orchestra tuned their instruments in silence.",
    "Our flight was delayed by heavy fog.",
    "He fixed the bicycle with a borrowed wrench.",
    "The museum keeps its oldest maps in a dark room.",
    "Fresh bread was cooling on the window sill.",
    "The lecture began with a simple question.",
    "A lantern glowed at the end of the pier.",
]


def read_wav(path: str) -> tuple[np.ndarray, int]:
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2, "festival writes 16-bit PCM"
        sr, n, ch = w.getframerate(), w.getnframes(), w.getnchannels()
        x = np.frombuffer(w.readframes(n), "<i2").astype(np.float64).reshape(-1, ch).mean(axis=1)
    return x / 32768.0, sr


def write_wav(path: str, x: np.ndarray, sr: int) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def synthesise(text: str, voice: str, tmp: str) -> np.ndarray:
    txt, wav = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.wav")
    with open(txt, "w") as f:
        f.write(text)
    subprocess.run(["text2wave", "-eval", f"({voice})", txt, "-o", wav], check=True, capture_output=True)
    x, sr = read_wav(wav)
    g = gcd(SR, sr)
    x = resample_poly(x, SR // g, sr // g)
    # trim leading / trailing near-silence, keep 50 ms margins
    loud = np.nonzero(np.abs(x) > 0.01 * np.abs(x).max())[0]
    margin = SR // 20
    x = x[max(loud[0] - margin, 0) : loud[-1] + margin]
    return 0.6 * x / np.abs(x).max()


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "wavs"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for tag, voice in VOICES.items():
            for i, text in enumerate(SENTENCES, 1):
                uid = f"{tag}-{i:04d}"
                write_wav(os.path.join(OUT, "wavs", uid + ".wav"), synthesise(text, voice, tmp), SR)
                rows.append(f"{uid}|{text}|{text}")
    with open(os.path.join(OUT, "metadata.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    lic = os.path.join(OUT, "LICENSES")
    os.makedirs(lic)
    for pkg, name in LICENSE_DOCS.items():
        shutil.copy(f"/usr/share/doc/{pkg}/copyright", os.path.join(lic, f"{name}.copyright"))


if __name__ == "__main__":
    main()
