"""edge-train: fit a segmentation model and write a checkpoint that export understands."""

from __future__ import annotations

import sys

from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.config import ConfigError

EXAMPLES = """\
  edge-train data/synth -o runs/mini.pt                          # MiniUNet defaults
  edge-train --config configs/unet_r34.yaml data=data/synth out=runs/r34.pt epochs=3
  edge-train --config configs/prelim.yaml data=data/synth out=runs/p.pt optimizer.lr=1e-3
  edge-train data/synth -o runs/r18.pt --architecture unet --encoder resnet18 --max-minutes 10
  edge-train --config configs/unet_r34.yaml out=runs/r34.pt resume=true   # after a stop
  torchrun --nproc-per-node 2 -m lineside.train.cli --config configs/unet_r34.yaml ...
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-train", "Train a defect segmentation model on a Severstal-layout folder. "
                "Settings come from --config (YAML/JSON), then flags, then KEY=VALUE "
                "overrides (dotted keys: optimizer.lr=1e-3).", EXAMPLES)
    ap.add_argument("data", nargs="?", help="folder with train.csv and train_images/")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--config", help="YAML or JSON training config (configs/*.yaml)")
    ap.add_argument("-o", "--out", help="checkpoint path (.pt)")
    ap.add_argument("--architecture",
                    help="mini_unet | unet | unetplusplus | deeplabv3plus | fpn | segformer")
    ap.add_argument("--encoder", help="smp encoder (resnet18, resnet34, efficientnet-b0, ...)")
    ap.add_argument("--encoder-weights", help="local pretrained encoder weights file")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--max-minutes", type=float)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--samples-per-epoch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--val-fraction", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--limit", type=int, help="use only the first N strips")
    args = ap.parse_args(argv)
    overrides = list(args.overrides)
    if args.data and "=" in args.data:  # `edge-train --config x.yaml epochs=3`
        overrides.insert(0, args.data)
        args.data = None
    setup_logging()

    from lineside.train.config import load_train_config
    from lineside.train.distributed import fit_maybe_distributed

    try:
        config = load_train_config(args.config, overrides, {
            "data": args.data, "out": args.out, "model.architecture": args.architecture,
            "model.encoder_name": args.encoder, "model.encoder_weights": args.encoder_weights,
            "epochs": args.epochs, "max_minutes": args.max_minutes,
            "batch_size": args.batch_size, "samples_per_epoch": args.samples_per_epoch,
            "optimizer.lr": args.lr, "val_fraction": args.val_fraction, "seed": args.seed,
            "limit": args.limit})
    except ConfigError as exc:
        print(f"edge-train: {exc}", file=sys.stderr)
        return 2
    meta = fit_maybe_distributed(config)
    if meta is not None:
        print(f"wrote {config.out}: val Dice {meta['metrics']['val_dice']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
