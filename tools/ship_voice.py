"""Make a checkpoint the package's shipped voice: nanoflow_jax/voices/NAME/{params.npz, voice.json, LICENSE.txt}.

    python tools/ship_voice.py --checkpoint runs/speech --name asterisk5 \
        --evaluation eval_t0.6.json eval_t0.8.json eval_t1.0.json --commit 5c875a5 --minutes 95 --cpu "..."

voice.json records the model and mel settings, the held-out split, how it was trained, the means of each
evaluation (python -m nanoflow_jax.evaluate --checkpoint ... --temperature T --out FILE.json) and the
temperature that measured best (held-out STOI, then wideband PESQ), which synth.py and evaluate use when
no --temperature is given. The voice's training-form params ship beside it (train_params.npz), so
`train.py --warm_start=nanoflow_jax/voices/NAME` fine-tunes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CREDITS = [
    "Allison Smith (en_US, es_MX prompts), CC-BY-SA-3.0, asterisk-core-sounds-en / -es",
    "June Wallack (fr_CA prompts), CC-BY-SA-3.0, asterisk-core-sounds-fr",
    "Carlo Flora (it_IT prompts), CC-BY-3.0, asterisk-core-sounds-it",
    "Maxim Topal, ivrvoice.ru (ru_RU prompts), CC-BY-3.0, asterisk-core-sounds-ru",
]
LICENSE_TEXT = """The asterisk5 voice: NanoFlow params trained by nanoflow-jax on the Asterisk telephony prompts
(Debian packages asterisk-core-sounds-{{en,es,fr,it,ru}}-g722), recorded by:

{credits}

Recordings financed in part by Digium, Inc. (see each package's copyright file, which
tools/make_speech_corpus.py copies beside the corpus as COPYRIGHT with the full licence texts).

The params are offered under the Creative Commons Attribution-ShareAlike 3.0 licence (CC-BY-SA-3.0:
https://creativecommons.org/licenses/by-sa/3.0/), the terms of the ShareAlike part of the recordings,
with the attribution above. The code that trained them is under the project's own licence.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--step", type=int, default=None, help="default: the newest")
    ap.add_argument("--name", default="asterisk5")
    ap.add_argument(
        "--evaluation",
        required=True,
        nargs="+",
        help="JSON written by python -m nanoflow_jax.evaluate, one per temperature",
    )
    ap.add_argument("--commit", required=True, help="the commit the run trained at")
    ap.add_argument("--minutes", type=float, required=True, help="CPU minutes of training")
    ap.add_argument("--cpu", required=True, help="the machine it trained on")
    ap.add_argument(
        "--command",
        default="python tools/make_speech_corpus.py --out data/asterisk && "
        "python train.py --config=configs/speech.py --workdir=runs/speech",
        help="how the run was made",
    )
    args = ap.parse_args()

    from nanoflow_jax.checkpoints import load_checkpoint
    from nanoflow_jax.models.audio_params import inference_params
    from nanoflow_jax.models.params import count_params
    from nanoflow_jax.voices import VOICES, write_voice

    config, model, training = load_checkpoint(args.checkpoint, args.step)
    n_params = count_params(training)
    params = inference_params(model, training)  # weight norm and the flow embedding folded: what synthesis reads
    evaluations = []
    for path in args.evaluation:
        with open(path, encoding="utf-8") as f:
            evaluations.append(json.load(f))

    def score(e: dict) -> tuple[float, float]:
        m = e["mean"]["model"]
        return (m.get("stoi") or 0.0, m.get("pesq_wb") or 0.0)

    evaluation = max(evaluations, key=score)  # the best temperature on the held-out prompts
    steps = int(config.get("train", {}).get("num_steps", 0))
    step = evaluation.get("step")
    m = model.config
    data = dict(config["data"])
    info = {
        "name": args.name,
        "summary": (
            f"NanoFlow C={m.channels} L={m.n_layers} K={m.n_flows} G={m.n_groups}"
            f"{', LPC source filter' if m.source_filter == 'lpc' else ''}, {n_params:,} params, "
            f"{data['sample_rate']} Hz Tacotron2 mel (hop {data['hop_length']}, fmax {data['fmax']:g}), "
            f"trained on five Asterisk prompt speakers"
        ),
        "model": m.to_dict(),
        "param_count": {"training_form": n_params, "inference_form": count_params(params)},
        "data": data,
        "training": {
            "config": "configs/speech.py",
            "command": args.command,
            "commit": args.commit,
            "step": step,
            "cpu_minutes": args.minutes,
            "cpu": args.cpu,
            "planned_steps": steps,
        },
        "temperature": evaluation["temperature"],
        "temperatures": {
            str(e["temperature"]): {
                k: e["mean"]["model"].get(k) for k in ("ll", "stoi", "pesq_wb", "vuv_f1", "log_mel_l1")
            }
            for e in evaluations
        },
        "evaluation": {
            "command": evaluation.get("command"),
            "temperature": evaluation["temperature"],
            "held_out": {s: [os.path.basename(f) for f in fs] for s, fs in evaluation["held_out"].items()},
            "mean": evaluation["mean"],
            "per_speaker": evaluation["per_speaker"],
        },
        "licence": "CC-BY-SA-3.0",
        "credits": CREDITS,
    }
    folder = os.path.join(VOICES, args.name)
    write_voice(folder, params, info, training=training)
    with open(os.path.join(folder, "LICENSE.txt"), "w", encoding="utf-8") as f:
        f.write(LICENSE_TEXT.format(credits="\n".join(f"- {c}" for c in CREDITS)))
    print(f"wrote {folder}: {os.path.getsize(os.path.join(folder, 'params.npz')) / 1e6:.2f} MB of params")


if __name__ == "__main__":
    main()
