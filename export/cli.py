"""edge-export: turn a training checkpoint into a self-describing model bundle."""

from __future__ import annotations

import sys

from lineside.edge.cli.common import parser, setup_logging

EXAMPLES = """\
  edge-export runs/mini.pt -o bundles/mini          # FP32 ONNX + manifest.json
"""


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-export", "Export a checkpoint to a model bundle (ONNX + manifest.json) "
                "with a torch-vs-ONNX Runtime parity check.", EXAMPLES)
    ap.add_argument("checkpoint", help="checkpoint from edge-train (.pt)")
    ap.add_argument("-o", "--out", required=True, help="bundle directory to write")
    ap.add_argument("--name", default="", help="model name in the manifest (default: file stem)")
    args = ap.parse_args(argv)
    setup_logging()

    from lineside.export.bundle_writer import ExportError, export_bundle

    try:
        manifest = export_bundle(args.checkpoint, args.out, args.name)
    except ExportError as exc:
        print(f"edge-export: {exc}", file=sys.stderr)
        return 1
    parity = manifest.parity["fp32"]["max_abs_diff"]
    print(f"wrote {args.out}: {', '.join(manifest.models)}; parity max |diff| {parity:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
