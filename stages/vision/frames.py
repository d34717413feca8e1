"""The frames of the vision pipeline: JPEG bytes, checked before anyone decodes them.

Default image set: the real photographs scikit-image ships with its package (no download), cut to the
aspect of the target size and re-encoded as JPEG (quality 90) at one of three sizes:

    small 320x240    medium 1280x720    large 3840x2160

Upscaling a 512-pixel photograph to 4K leaves it smoother than a real 4K photograph, so its JPEG would
decode faster than a camera's; a little sensor-like noise (sigma 2 grey levels) is added to medium and
large images so their file sizes (and decode times) are closer to real photographs'. The set is built
once and cached under ``~/.cache/testbed/images/v1/<size>/`` (written to a temporary name and renamed, so
a cache file is never half-written); when the cache cannot be written the set is kept in memory.

``--images DIR`` uses the ``*.jpg``/``*.jpeg`` files of a folder instead (for example COCO val2017), the
first ``MAX_FOLDER_FRAMES`` in name order; frame i of a run is image i modulo their number.
Frames are read into memory before the run starts, so the run never waits on the disk.

``check_jpeg`` is the gate every frame passes before decoding: an empty file, a file that is not a
JPEG, a truncated JPEG (no end-of-image marker after the first scan: libjpeg would otherwise decode the
missing part as grey and say nothing) and an image whose header announces more than ``MAX_PIXELS``
pixels (a decompression bomb: a few bytes that would allocate gigabytes) are refused with a reason.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from testbed.analysis.report import atomic_write
from testbed.errors import ConfigError

SIZES = {"small": (320, 240), "medium": (1280, 720), "large": (3840, 2160)}
# skimage.data photographs bundled with the package (none of these triggers a download).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "retina")
QUALITY = 90
NOISE_SIGMA = 2.0
CACHE_VERSION = "v1"
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192; a 4K frame is 8.3 Mpx
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")
MAX_FOLDER_FRAMES = 500  # frames are held in memory: the first 500 of COCO val2017 are about 80 MB


class BadFrame(ValueError):
    """A frame that cannot be processed; its message is the reason recorded in run.json."""


@dataclass(frozen=True)
class Frame:
    name: str
    data: bytes


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "testbed", "images", CACHE_VERSION)


def load(image_size: str, images_dir: str = "") -> list[Frame]:
    """The frames of a run: the user's JPEGs (``images_dir``) or the bundled set at ``image_size``."""
    if images_dir:
        return load_folder(images_dir)
    return bundled(image_size)


def load_folder(path: str) -> list[Frame]:
    try:
        names = sorted(n for n in os.listdir(path)
                       if n.lower().endswith(JPEG_EXTENSIONS) and not n.startswith("."))
    except OSError as exc:
        raise ConfigError(f"--images {path!r} cannot be read: {exc.strerror}") from None
    frames = []
    for n in names[:MAX_FOLDER_FRAMES]:
        full = os.path.join(path, n)
        if not os.path.isfile(full):
            continue
        try:
            with open(full, "rb") as fh:
                frames.append(Frame(n, fh.read()))
        except OSError:
            frames.append(Frame(n, b""))  # unreadable: fails as an empty frame, with its reason
    if not frames:
        raise ConfigError(f"--images {path!r} holds no JPEG files (*.jpg, *.jpeg): nothing to send")
    return frames


def bundled(image_size: str) -> list[Frame]:
    """The skimage photographs at one size, from the cache or built (and cached) now."""
    if image_size not in SIZES:
        raise ConfigError(f"--image-size {image_size!r} is not allowed: use one of {', '.join(SIZES)}")
    folder = os.path.join(cache_dir(), image_size)
    frames = []
    for name in PHOTOS:
        path = os.path.join(folder, f"{name}.jpg")
        data = _read(path)
        if data is None:
            data = encode_photo(name, SIZES[image_size])
            if data is None:
                continue  # not in this scikit-image version
            _write(path, data)
        frames.append(Frame(name, data))
    if not frames:
        raise ConfigError("no scikit-image sample photographs found: install scikit-image or use --images DIR")
    return frames


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _write(path: str, data: bytes) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path, binary=True) as fh:
            fh.write(data)
    except OSError:
        pass  # a read-only home: the set lives in memory for this run


def _photo(name: str):
    from skimage import data
    if name == "motorcycle":
        return data.stereo_motorcycle()[0]
    return getattr(data, name)()


def encode_photo(name: str, size: tuple[int, int]) -> bytes | None:
    """One photograph cut to the aspect of ``size`` (w, h), resized, noised (if upscaled) and JPEG-encoded."""
    import numpy as np
    import torch
    from torchvision.io import encode_jpeg
    from torchvision.transforms.v2 import functional as F
    try:
        arr = _photo(name)
    except Exception:  # noqa: BLE001 - a photograph this scikit-image lacks (or would download) is skipped
        return None
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    img = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)
    w, h = size
    _, ih, iw = img.shape
    # centre crop to the target aspect, then resize
    if iw * h > ih * w:
        cw = ih * w // h
        img = img[:, :, (iw - cw) // 2:(iw - cw) // 2 + cw]
    else:
        ch = iw * h // w
        img = img[:, (ih - ch) // 2:(ih - ch) // 2 + ch, :]
    upscaled = img.shape[1] < h
    img = F.resize(img, [h, w], antialias=True)
    if upscaled:
        g = torch.Generator().manual_seed(len(name))
        noisy = img.float() + torch.randn(img.shape, generator=g) * NOISE_SIGMA
        img = noisy.round_().clamp_(0, 255).to(torch.uint8)
    return encode_jpeg(img.contiguous(), quality=QUALITY).numpy().tobytes()


def jpeg_size(data) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header, after checking the file is a complete JPEG.

    Raises BadFrame with the reason. Only the markers are walked; the scan data is not touched.
    """
    mv = memoryview(data)
    n = len(mv)
    if n == 0:
        raise BadFrame("empty file")
    if n < 4 or mv[0] != 0xFF or mv[1] != 0xD8:
        raise BadFrame("not a JPEG (no start-of-image marker)")
    pos = 2
    size = None
    while pos + 4 <= n:
        if mv[pos] != 0xFF:
            raise BadFrame(f"corrupt JPEG (no marker at byte {pos})")
        marker = mv[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            break
        (length,) = struct.unpack_from(">H", mv, pos + 2)
        if length < 2:
            raise BadFrame(f"corrupt JPEG (segment length {length} at byte {pos})")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if pos + 9 > n:
                break
            h, w = struct.unpack_from(">HH", mv, pos + 5)
            size = (w, h)
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            if size is None:
                raise BadFrame("corrupt JPEG (scan before any frame header)")
            # 0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), so a complete file has
            # one after the scan; a truncated file does not.
            if bytes(mv[pos:]).rfind(b"\xff\xd9") < 0:
                raise BadFrame(f"truncated JPEG ({n} bytes, no end-of-image marker after the scan)")
            break
        pos += 2 + length
    else:
        raise BadFrame(f"truncated JPEG ({n} bytes, ends inside its headers)")
    if size is None:
        raise BadFrame("corrupt JPEG (no frame header)")
    w, h = size
    if w == 0 or h == 0:
        raise BadFrame(f"corrupt JPEG (image of {w}x{h} pixels)")
    if w * h > MAX_PIXELS:
        raise BadFrame(f"image of {w}x{h} = {w * h / 1e6:.0f} Mpx is over the limit of "
                       f"{MAX_PIXELS / 1e6:.0f} Mpx (decompression bomb?)")
    return w, h
