"""edge-labels: what a labelled folder holds, and the same data set in another format.

A plant's labels come as its labelling tool wrote them (Severstal CSV, image + mask
folders, LabelMe); every lineside command reads all three (edge/labels/). This tool says
what a folder is as lineside reads it, and converts between the formats, checking that
the written labels read back as the same masks.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from lineside.edge.cli.common import parser, setup_logging
from lineside.edge.labels import LabelFormatError, open_dataset
from lineside.edge.labels.convert import TARGETS, convert

EXAMPLES = """\
  edge-labels info data/severstal                      # format, images, images per class
  edge-labels convert data/labelme data/as-csv --to severstal --layout old
  edge-labels convert data/severstal data/masks --to mask_folders
"""


def info(root: str) -> dict:
    dataset = open_dataset(root)
    per_class: Counter[int] = Counter()
    defect_free = 0
    for sample in dataset.samples:
        classes = sample.classes()
        per_class.update(classes)
        defect_free += not classes
    return {"root": str(dataset.root), "format": dataset.format, "images": len(dataset),
            "labelled": dataset.labelled,
            "images_per_class": {str(c): n for c, n in sorted(per_class.items())},
            "defect_free": defect_free if dataset.labelled else None}


def main(argv: list[str] | None = None) -> int:
    ap = parser("edge-labels", "Inspect and convert labelled data sets.", EXAMPLES)
    sub = ap.add_subparsers(dest="command", required=True)
    one = sub.add_parser("info", help="format, image count and images per class")
    one.add_argument("data")
    two = sub.add_parser("convert", help="write the data set in another format (images "
                         "copied as they are, labels read back and compared)")
    two.add_argument("data")
    two.add_argument("out", help="new (or empty) folder to write")
    two.add_argument("--to", required=True, choices=TARGETS)
    two.add_argument("--layout", choices=["new", "old"], default="new",
                     help="--to severstal: Kaggle's new (ImageId,ClassId,EncodedPixels) or "
                     "old (ImageId_ClassId,EncodedPixels) train.csv")
    two.add_argument("--classes", default="1,2,3,4", help="class ids to carry over")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.command == "info":
            result = info(args.data)
        else:
            class_ids = tuple(int(c) for c in args.classes.split(","))
            result = convert(open_dataset(args.data), args.out, args.to, class_ids,
                             args.layout).to_json()
    except (LabelFormatError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"edge-labels: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    if args.command == "convert" and not result["exact"]:
        print(f"edge-labels: {len(result['changed_pixels'])} image(s) changed in the "
              f"conversion (see changed_pixels)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
