"""edge-train: fit a segmentation model and write a checkpoint that export understands."""

from __future__ import annotations

import sys

from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-train data/synth -o runs/mini.pt                          # MiniUNet, 20 epochs
  edge-train data/synth -o runs/mini.pt --epochs 50 --max-minutes 10 --crop 256x512
  edge-train data/synth -o runs/unet_r18.pt --architecture unet --encoder resnet18
"""


def _pair(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-train", "Train a defect segmentation model on a Severstal-layout folder.",
                EXAMPLES)
    ap.add_argument("data", help="folder with train.csv and train_images/")
    ap.add_argument("-o", "--out", required=True, help="checkpoint path (.pt)")
    ap.add_argument("--architecture", default="mini_unet",
                    help="mini_unet | unet | unetplusplus | deeplabv3plus | fpn | segformer")
    ap.add_argument("--encoder", default=None,
                    help="smp encoder for the smp architectures (resnet18, resnet34, ...)")
    ap.add_argument("--encoder-weights", default=None,
                    help="local file with pretrained encoder weights (nothing is downloaded)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop after the epoch that passes this much time")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop", type=_pair, default=(256, 256), help="training crop HxW")
    ap.add_argument("--tile", type=_pair, default=(256, 256),
                    help="tile HxW the runtime will feed the exported model")
    ap.add_argument("--samples-per-epoch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N strips")
    args = ap.parse_args(argv)
    setup_logging()

    from lineside.train.trainer import TrainConfig, fit

    model_params = {}
    if args.encoder:
        model_params["encoder_name"] = args.encoder
    if args.encoder_weights:
        model_params["encoder_weights"] = args.encoder_weights
    meta = fit(TrainConfig(data=args.data, out=args.out, architecture=args.architecture,
                           model_params=model_params,
                           epochs=args.epochs, max_minutes=args.max_minutes,
                           batch_size=args.batch_size, crop=args.crop, tile=args.tile,
                           samples_per_epoch=args.samples_per_epoch, lr=args.lr,
                           val_fraction=args.val_fraction, seed=args.seed, limit=args.limit))
    print(f"wrote {args.out}: val Dice {meta['metrics']['val_dice']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
