"""Every image file cnncli reads goes through :func:`load_image`: one policy for all commands.

Training data (``image_folder``, ``csv``, ``caltech101``), ``predict``, ``visualize
--image`` and ``eval --data-path`` open images here and nowhere else. The policy:

* **Formats**: JPEG, PNG, BMP, GIF and WebP, recognised by their bytes, not by their
  names: a JPEG named ``.png`` is read as the JPEG it is; a file in any other format
  (TIFF, PDF, PostScript/EPS, SVG, HEIC, ...) is refused whatever its name. Pillow's
  other readers (its EPS reader runs Ghostscript) are never reached.
* **Size**: the width and height are read from the header and ``width x height`` is
  checked against ``data.max_image_pixels`` (default :data:`DEFAULT_MAX_IMAGE_PIXELS`)
  *before* anything is decoded: a decompression bomb (a small file that decodes to
  gigabytes) is refused without decoding it. Pillow's own decompression-bomb limit
  (:data:`PILLOW_BOMB_LIMIT` pixels) is turned into the same kind of error.
* **Damage**: an empty (zero-byte) file, a truncated file and a damaged one are errors
  naming the file (never a Pillow traceback); ``data.on_bad_image: skip`` leaves them
  out where a command reads many files.
* **Animation**: an animated GIF, PNG or WebP is read as its first frame; the caller is
  told which files were animated (``animated``) so it can say so once.
* **Modes**: 16-bit greyscale is scaled to 8 bits (``round(v / 257)``, not clipped);
  CMYK, palette (with or without transparency), greyscale+alpha and RGBA are converted
  with Pillow's ``convert``; alpha is dropped, not composited.
* **EXIF orientation is applied**: a photo whose EXIF says "rotated" is turned upright
  first, as image viewers show it, in every command alike (a phone's portrait photo is
  portrait for training and for ``predict``).

Then the image is converted to the model's channels (greyscale to RGB by repeating, RGB
to greyscale by luminance) and resized to the input size with bilinear interpolation.

Every refusal is a :class:`BadImageError` (a :class:`~cnncli.errors.DataError`: one
line and exit code 2 in the command line).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from cnncli.errors import DataError

#: data.max_image_pixels when a config does not say: 50 megapixels, more than a phone
#: camera's photo (about 150 MB decoded as RGB) and thousands of times this tool's inputs.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
#: Above this (twice Pillow's Image.MAX_IMAGE_PIXELS) Pillow itself refuses to open an
#: image; data.max_image_pixels cannot go higher.
PILLOW_BOMB_LIMIT = 2 * 89_478_485
#: The Pillow readers an image may be opened with (whatever its file name says).
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
FORMAT_NAMES = "JPEG, PNG, BMP, GIF or WebP"

# The first bytes of the formats that are read, and of some that people try.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_OTHER_FORMATS = (
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript file"), (b"\xc5\xd0\xd3\xc6", "an EPS file"), (b"8BPS", "a Photoshop file"),
    (b"PK\x03\x04", "a zip archive"), (b"\x1f\x8b", "gzip data"), (b"<svg", "an SVG drawing"),
    (b"<?xml", "XML (an SVG drawing?)"), (b"\x00\x00\x01\x00", "a Windows icon"),
)


class BadImageError(DataError):
    """A file that cannot be read as an image under the policy; ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.reason = reason
        super().__init__(f"{path}: not a readable image ({reason})")


def load_image(path: str | Path, height: int, width: int, channels: int, *,
               max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, animated: list[str] | None = None) -> np.ndarray:
    """One image file -> uint8 (``height``, ``width``, ``channels``) under the module's
    policy; raises :class:`BadImageError` (and nothing else) for a file it refuses.

    An animated file's path is appended to ``animated`` (when given): only its first
    frame was read."""
    from PIL import Image

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "the file is empty: 0 bytes")
    except OSError as err:
        raise BadImageError(path, f"cannot be read: {err.strerror or err}") from None
    try:
        with warnings.catch_warnings():
            # data.max_image_pixels, checked below from the header, is the limit that
            # applies; Pillow's warning between its two limits would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=FORMATS)
    except Image.DecompressionBombError as err:
        announced = re.search(r"\((\d+) pixels\)", str(err))  # Pillow: "Image size (N pixels) exceeds limit ..."
        got = f"{int(announced.group(1)):,} pixels" if announced else "more"
        raise BadImageError(path, f"expected at most {PILLOW_BOMB_LIMIT:,} pixels, Pillow's decompression-bomb "
                                  f"limit; got {got} from its header, refused before decoding") from None
    except Image.UnidentifiedImageError:
        raise BadImageError(path, f"expected {FORMAT_NAMES} data; got {describe_start(path)}") from None
    except Exception as err:  # noqa: BLE001 Pillow's readers raise many kinds for a damaged header
        raise BadImageError(path, describe_failure(err)) from None
    with img:
        w, h = img.size
        if w * h > max_pixels:
            raise BadImageError(path, f"expected at most {max_pixels:,} pixels, data.max_image_pixels; got "
                                      f"{w}x{h} = {w * h:,} from its header, refused before decoding")
        try:
            pixels = _decode(img, height, width, channels)
            if getattr(img, "is_animated", False) and animated is not None:
                animated.append(str(path))  # only once read: a file that fails is skipped, not "read"
            return pixels
        except Exception as err:  # noqa: BLE001 a damaged or truncated body: OSError, SyntaxError, ValueError, ...
            raise BadImageError(path, describe_failure(err)) from None


def _decode(img, height: int, width: int, channels: int) -> np.ndarray:
    """The opened image (frame 0), upright, converted and resized: uint8 (H, W, C)."""
    from PIL import Image, ImageOps

    ImageOps.exif_transpose(img, in_place=True)  # upright first, as EXIF says (before convert drops the EXIF)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit greyscale: Pillow's convert clips to 255; scale to 8 bits instead.
        # (v + 128) // 257 is round(v / 257) for every integer v (no v / 257 ends in exactly .5).
        wide = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)  # 4 bytes a pixel, whatever the mode
        img = Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the same colours as P -> RGB, without Pillow's warning about it
    img = img.convert("RGB" if channels == 3 else "L")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).reshape(height, width, channels)


def describe_failure(err: Exception) -> str:
    """What went wrong while decoding, in words (Pillow's message where it has one)."""
    text = str(err)
    if "truncated" in text or isinstance(err, EOFError):
        return f"truncated: the file ends before the image does; {text or type(err).__name__}"
    return text if text and isinstance(err, (OSError, SyntaxError)) else f"{type(err).__name__}: {text}"


def describe_start(path: Path) -> str:
    """What the first bytes of a file say it is: a damaged header of a format that is
    read, another format, text, or the bytes themselves."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        return f"a file that cannot be read ({err.strerror or err})"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return f"a {name} signature with a damaged header"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP signature with a damaged header"
    if head[4:8] == b"ftyp":
        return "an ISO media file (HEIC, AVIF or video)"
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"text ({head.decode('ascii')!r}...)"
    return "bytes " + " ".join(f"{b:02x}" for b in head[:8])


def animated_note(files: list[str]) -> str:
    """The one line that says which animated files were read as their first frame."""
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    many = len(files) != 1
    return (f"{len(files)} animated image{'s' if many else ''} read as {'their' if many else 'its'} first frame "
            f"only: {shown}")
