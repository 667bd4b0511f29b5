"""A folder of images with sidecar text files: ``scan1.png`` + ``scan1.txt`` (the report).

The domain is the first sub-folder under the root (``root/CT/scan1.png`` → ``CT``) unless given.
"""

from __future__ import annotations

from pathlib import Path

from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.manifest import ReadResult
from mmedrag.records import Pair

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


def read_folder(root: str | Path, domain: str | None = None, on_error: str = "skip") -> ReadResult:
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    result = ReadResult()
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        sidecar = image.with_suffix(".txt")
        try:
            if root.resolve() not in image.resolve().parents:
                raise InputError("image link leaves the folder (refused)", path=str(image))
            if not sidecar.exists():
                raise InputError("no sidecar report (.txt with the same name)", path=str(image))
            text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
            if not text:
                raise InputError("empty report", path=str(sidecar))
        except InputError as exc:
            if on_error == "fail":
                raise
            result.skipped += 1
            result.errors.append(str(exc))
            continue
        relative = image.relative_to(root)
        label = domain or (relative.parts[0] if len(relative.parts) > 1 else "")
        rid = "f_" + "_".join(relative.with_suffix("").parts)
        result.records.append(Pair(id=rid, text=text, image=str(image.resolve()), domain=label,
                                   meta={"modality": label, "_source": str(image)}))
    return result
