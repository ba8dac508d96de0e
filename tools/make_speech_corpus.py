"""Build the speech corpus: five professional single-speaker voices from Debian's Asterisk prompt packages.

    pip install g722              # the G.722 decoder (a small wheel; also in the project's `corpus` extra)
    python tools/make_speech_corpus.py --out data/asterisk

Debian ships the Asterisk telephony prompts as `asterisk-core-sounds-{en,es,fr,it,ru}-g722`: studio
recordings of one speaker per language, 16 kHz wideband G.722 at 64 kbit/s. The script fetches the
packages with the ordinary Debian client (`apt-get download`, no root needed), unpacks them with
`dpkg-deb`, decodes every prompt to 16-bit PCM and writes, per speaker,

    OUT/<speaker>/wavs/<lang>-<prompt>.wav     16 kHz mono 16-bit
    OUT/<speaker>/metadata.csv                 file id | speaker | language | seconds
    OUT/<speaker>/COPYRIGHT                    the package's copyright file (licence and credits)

plus OUT/README.txt naming the voices and their licences. Tones, beeps and the `silence/` clips are left
out (they are not speech). The output is deterministic: the same packages give the same bytes. Training
resamples to the config's rate; G.722 is band-limited to 7 kHz, so a 22.05 kHz model trained on it
learns an empty top band.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np

SAMPLE_RATE = 16000
BIT_RATE = 64000
# language -> (package, the folder under /usr/share/asterisk/sounds, speaker, licence)
VOICES = {
    "en": ("asterisk-core-sounds-en-g722", "en_US_f_Allison", "Allison Smith", "CC-BY-SA-3.0"),
    "es": ("asterisk-core-sounds-es-g722", "es_MX_f_Allison", "Allison Smith", "CC-BY-SA-3.0"),
    "fr": ("asterisk-core-sounds-fr-g722", "fr_CA_f_June", "June Wallack", "CC-BY-SA-3.0"),
    "it": ("asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "Carlo Flora", "CC-BY-3.0"),
    "ru": ("asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "Maxim Topal (ivrvoice.ru)", "CC-BY-3.0"),
}
NOT_SPEECH = ("tone", "beep")  # prompt names holding these are signalling sounds


def is_speech(rel: str) -> bool:
    name = os.path.basename(rel).lower()
    return not rel.startswith("silence/") and not any(word in name for word in NOT_SPEECH)


def decode_g722(data: bytes) -> np.ndarray:
    import G722

    return np.asarray(G722.G722(SAMPLE_RATE, BIT_RATE).decode(data), dtype=np.int16)


def write_wav16(path: str, samples: np.ndarray, rate: int) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def fetch(package: str, workdir: str) -> str:
    """-> the folder the package was unpacked into."""
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True, capture_output=True)
    (deb,) = [n for n in os.listdir(workdir) if n.startswith(package + "_") and n.endswith(".deb")]
    root = os.path.join(workdir, package)
    subprocess.run(["dpkg-deb", "-x", os.path.join(workdir, deb), root], check=True)
    return root


def build_speaker(lang: str, root: str, out: str) -> tuple[int, float]:
    """Decode one unpacked package into OUT/<speaker>; -> (prompts, seconds)."""
    package, folder, speaker, licence = VOICES[lang]
    sounds = os.path.join(root, "usr", "share", "asterisk", "sounds", folder)
    prompts = sorted(
        os.path.relpath(os.path.join(d, n), sounds)
        for d, _, names in os.walk(sounds)
        for n in names
        if n.endswith(".g722")
    )
    target = os.path.join(out, folder)
    os.makedirs(os.path.join(target, "wavs"), exist_ok=True)
    rows, seconds = [], 0.0
    for rel in filter(is_speech, prompts):
        with open(os.path.join(sounds, rel), "rb") as f:
            pcm = decode_g722(f.read())
        if pcm.size < SAMPLE_RATE // 10:  # under 0.1 s: a click, not a prompt
            continue
        file_id = f"{lang}-" + rel[: -len(".g722")].replace("/", "-")
        write_wav16(os.path.join(target, "wavs", file_id + ".wav"), pcm, SAMPLE_RATE)
        rows.append(f"{file_id}|{speaker}|{lang}|{pcm.size / SAMPLE_RATE:.3f}")
        seconds += pcm.size / SAMPLE_RATE
    with open(os.path.join(target, "metadata.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    shutil.copyfile(os.path.join(root, "usr", "share", "doc", package, "copyright"), os.path.join(target, "COPYRIGHT"))
    return len(rows), seconds


def write_readme(out: str, summary: dict[str, tuple[int, float]]) -> None:
    lines = [
        "Speech corpus built by tools/make_speech_corpus.py from Debian's Asterisk prompt packages.",
        "16 kHz mono 16-bit PCM decoded from G.722 (band-limited to 7 kHz). Each speaker's folder holds the",
        "package's copyright file with the full licence text and credits.",
        "",
        "folder | speaker | language | licence | prompts | minutes",
    ]
    for lang, (package, folder, speaker, licence) in VOICES.items():
        if lang in summary:
            n, s = summary[lang]
            lines.append(f"{folder} | {speaker} | {lang} | {licence} ({package}) | {n} | {s / 60:.1f}")
    with open(os.path.join(out, "README.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus folder to write (one sub-folder per speaker)")
    p.add_argument("--languages", default=",".join(VOICES), help="comma-separated subset of " + ",".join(VOICES))
    args = p.parse_args(argv)
    langs = [s for s in args.languages.split(",") if s]
    unknown = [s for s in langs if s not in VOICES]
    if unknown:
        print(
            f"make_speech_corpus: error: unknown language(s) {unknown}; expected some of {list(VOICES)}",
            file=sys.stderr,
        )
        return 2
    try:
        import G722  # noqa: F401
    except ImportError:
        print("make_speech_corpus: error: the G.722 decoder is missing: pip install g722", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    out = os.path.abspath(os.path.expanduser(args.out))
    os.makedirs(out, exist_ok=True)
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lang in langs:
            try:
                root = fetch(VOICES[lang][0], tmp)
            except (subprocess.CalledProcessError, FileNotFoundError) as e:
                msg = getattr(e, "stderr", b"") or str(e)
                msg = msg.decode(errors="replace").strip() if isinstance(msg, bytes) else msg
                print(f"make_speech_corpus: error: could not fetch {VOICES[lang][0]}: {msg}", file=sys.stderr)
                return 2
            summary[lang] = build_speaker(lang, root, out)
            n, s = summary[lang]
            print(f"{VOICES[lang][1]}: {n} prompts, {s / 60:.1f} minutes")
    write_readme(out, summary)
    total = sum(s for _, s in summary.values())
    print(
        f"wrote {out}: {sum(n for n, _ in summary.values())} prompts, {total / 60:.1f} minutes, "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
