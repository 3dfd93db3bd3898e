"""Finding frames on disk in the layouts lineside reads (Severstal and plain folders)."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(root: str | Path) -> list[Path]:
    """Images of a data-set folder: `train_images/` when present, else the folder itself."""
    root = Path(root)
    if root.is_file():
        return [root]
    folder = root / "train_images" if (root / "train_images").is_dir() else root
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images
