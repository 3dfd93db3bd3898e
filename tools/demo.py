"""edge-demo: the whole line on this machine, from generated labels to reject signals.

Runs each step as its own process, exactly as a user would run the commands:
edge-synth -> edge-train -> edge-export -> edge-serve + edge-listen + edge-camsim, then
scores the published masks against the ground truth and draws overlays. This module
imports no torch: training and export run in their own processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from lineside.edge import rle
from lineside.edge.accounting import Ledger
from lineside.edge.cli.args import serve_command
from lineside.edge.cli.common import parser
from lineside.edge.labels import open_dataset
from lineside.edge.overlay import compare
from lineside.edge.scoring import dice_pairs

EXAMPLES = """\
  edge-demo                              # everything under ./demo-output
  edge-demo --workdir /tmp/line --train-minutes 4 --frames 60
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step(title: str, module: str, *args: str) -> None:
    print(f"\n== {title}", flush=True)
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", module, *args], check=True)
    print(f"   ({time.monotonic() - began:.1f} s)", flush=True)


def run_line(workdir: Path, bundle: Path, replay: Path, frames: int, rate: float) -> Path:
    """Serve the bundle, replay frames through it, record what a gateway receives."""
    frames_in, results_out = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    record, ready = workdir / "results.jsonl", workdir / "listener.ready"
    record.unlink(missing_ok=True)
    ready.unlink(missing_ok=True)
    print("\n== edge-serve + edge-listen + edge-camsim", flush=True)
    serve = subprocess.Popen(serve_command(str(bundle), {
        "backend": "ort-cpu", "publish_masks": True, "input": [frames_in],
        "output": results_out}))
    listen = None
    try:
        listen = subprocess.Popen([sys.executable, "-m", "lineside.edge.cli.listen",
                                   "--endpoint", results_out, "--expect", str(frames),
                                   "--timeout", "60", "--record", str(record),
                                   "--ready-file", str(ready)])
        deadline = time.monotonic() + 120
        while not ready.exists():
            if time.monotonic() > deadline or serve.poll() is not None:
                raise RuntimeError("the daemon did not come up (see its log above)")
            time.sleep(0.2)
        subprocess.run([sys.executable, "-m", "lineside.tools.camsim", str(replay),
                        "--endpoint", frames_in, "--rate", str(rate), "--count", str(frames),
                        "--loop"], check=True)
        listen.wait(timeout=180)
    finally:
        if listen and listen.poll() is None:
            listen.terminate()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    return record


def summarise(record: Path, replay: Path, frames: int, out: Path) -> dict:
    rows = [json.loads(line) for line in record.read_text().splitlines() if line]
    book = Ledger()
    for row in rows:
        book.add(row.pop("topic"), row)
    rejects = {r["frame_id"]: r for r in book.bodies("result")}
    masks = {r["frame_id"]: r for topic, r in book.others if topic == "mask"}
    samples = open_dataset(replay).samples
    per_frame = []
    for frame_id, mask in sorted(masks.items()):
        sample = samples[frame_id % len(samples)]
        class_ids = tuple(int(k) for k in mask["classes"])
        shape = (mask["height"], mask["width"])
        predicted = np.stack([rle.decode(mask["classes"][str(c)], shape) for c in class_ids])
        truth = sample.masks(class_ids, shape)
        per_frame.append((float(dice_pairs(predicted, truth).mean()), frame_id,
                          sample.image_path, predicted, truth))
    dice = float(np.mean([d for d, *_ in per_frame])) if per_frame else float("nan")
    received = [r["received_ns"] for r in rejects.values()]
    published = [r["published_ns"] for r in rejects.values()]
    span = (max(published) - min(received)) / 1e9 if rejects else 0.0
    latencies = sorted(r["latency_ms"] for r in rejects.values())

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    # Overlays: the worst and best frames that hold a defect, so review starts at errors.
    with_defects = [f for f in per_frame if f[4].any() or f[3].any()]
    picks = sorted(with_defects, key=lambda f: f[0])
    picks = picks[:2] + picks[-2:] if len(picks) > 4 else picks
    for score, frame_id, path, predicted, truth in picks:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        label = f"frame {frame_id} Dice {score:.3f}"
        cv2.imwrite(str(out / f"frame{frame_id:04d}.png"), compare(gray, predicted, truth, label))
    return {
        "frames_sent": frames, "results": len(rejects), "errors": book.counts["error"],
        "drops": book.counts["drop"], "accounted": book.accounted,
        "rejects": sum(1 for r in rejects.values() if r["verdict"] == "REJECT"),
        "frames_per_s": len(rejects) / span if span else 0.0,
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_max": latencies[-1] if latencies else None,
        "kaggle_dice": dice, "overlays": sorted(str(p) for p in out.glob("*.png")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-demo", "Run the demo line end to end on the CPU and print a summary.",
                EXAMPLES)
    ap.add_argument("--workdir", default="demo-output", help="where everything is written")
    ap.add_argument("--train-strips", type=int, default=240)
    ap.add_argument("--train-minutes", type=float, default=2.0)
    ap.add_argument("--frames", type=int, default=40, help="frames the camera sends")
    ap.add_argument("--rate", type=float, default=8.0, help="camera frames per second")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    began = time.monotonic()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, replay = work / "data", work / "replay"
    checkpoint, bundle = work / "model.pt", work / "bundle"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    step("edge-synth: labelled training strips", "lineside.train.data.synth", "-o", str(data),
         "--count", str(args.train_strips), "--seed", str(args.seed))
    step("edge-synth: held-out strips for the camera", "lineside.train.data.synth",
         "-o", str(replay), "--count", str(min(args.frames, 40)), "--seed", str(args.seed),
         "--start", "100000")
    step("edge-train: MiniUNet on the CPU", "lineside.train.cli", str(data), "-o",
         str(checkpoint), "--epochs", "60", "--max-minutes", str(args.train_minutes),
         "--seed", str(args.seed))
    step("edge-export: bundle with parity check", "lineside.export.cli", str(checkpoint),
         "-o", str(bundle), "--name", "demo-mini-unet")
    record = run_line(work, bundle, replay, args.frames, args.rate)
    summary = summarise(record, replay, args.frames, work / "overlays")
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print("\n== demo line summary")
    print(f"frames sent       {summary['frames_sent']}")
    print(f"results received  {summary['results']}  (errors {summary['errors']})")
    print(f"rejects           {summary['rejects']}")
    print(f"frames/s          {summary['frames_per_s']:.1f}  (camera at {args.rate:g}/s)")
    print(f"latency p50/max   {summary['latency_ms_p50']} / {summary['latency_ms_max']} ms")
    print(f"Kaggle Dice       {summary['kaggle_dice']:.4f}  (published masks vs ground truth)")
    print(f"training curve    {checkpoint.with_suffix('.png')}")
    for path in summary["overlays"]:
        print(f"overlay           {path}")
    print(f"total time        {time.monotonic() - began:.0f} s")
    lost = summary["frames_sent"] - summary["accounted"]
    if lost:
        print(f"LOST FRAMES       {lost}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
