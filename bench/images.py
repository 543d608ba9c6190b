"""Realistic JPEGs for the benchmark, generated once into a git-ignored cache, and a tiny
HTTP server that serves them on 127.0.0.1.

A flat test image compresses to a few kilobytes whatever its size; a phone photo of a shop
shelf is 0.2 to 0.4 bytes per pixel. Gradients plus blocky colour patches plus sensor-like
noise land in that range, so downloads move as many bytes as real ones would.
"""

from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from local_stack.loopback import LoopbackServer

CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "bench-images"

# (name, width, height): 0.3 to 12 megapixels, the range of field agents' phones.
PHOTO_SIZES: tuple[tuple[str, int, int], ...] = (
    ("vga", 640, 480),  # 0.3 MP
    ("hd", 1280, 960),  # 1.2 MP
    ("fhd", 1920, 1440),  # 2.8 MP
    ("5mp", 2592, 1944),  # 5.0 MP
    ("8mp", 3264, 2448),  # 8.0 MP
    ("12mp", 4000, 3000),  # 12.0 MP
)
# Just under the service's 20 MiB cap (MAX_IMAGE_BYTES), so it is downloaded in full.
LARGE_NAME = "20mb"
LARGE_TARGET_BYTES = 20 * 1024 * 1024 - 256 * 1024
_VERSION = "v2"  # bump when the generator changes, so stale caches are not reused


def _photo(width: int, height: int, seed: int, noise_sigma: float) -> Image.Image:
    """Smooth lighting, shelf-like colour blocks and per-pixel noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):
        fx, fy = rng.uniform(0.5, 3.0, 2)
        base[..., channel] = 110 + 60 * np.sin(fx * np.pi * x + channel) * np.cos(fy * np.pi * y)
    # Products on shelves: coloured rectangles, upscaled from a coarse grid.
    blocks = rng.integers(-50, 50, size=(24, 32, 3)).astype(np.float32)
    tile = (height + 23) // 24, (width + 31) // 32
    base += np.kron(blocks, np.ones((*tile, 1), dtype=np.float32))[:height, :width]
    base += rng.normal(0.0, noise_sigma, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def _encode(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def ensure_images(cache_dir: Path = CACHE_DIR) -> dict[str, Path]:
    """name -> JPEG file; generates what the cache lacks (about a minute, once)."""
    folder = cache_dir / _VERSION
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for index, (name, width, height) in enumerate(PHOTO_SIZES):
        path = folder / f"{name}.jpg"
        if not path.exists():
            path.write_bytes(_encode(_photo(width, height, index, noise_sigma=10.0), 88))
        files[name] = path
    large = folder / f"{LARGE_NAME}.jpg"
    if not large.exists():
        large.write_bytes(_large_jpeg())
    files[LARGE_NAME] = large
    return files


def _large_jpeg() -> bytes:
    """A heavy-noise 12 MP JPEG at the highest quality that stays under the target size."""
    image = _photo(4000, 3000, 99, noise_sigma=90.0)
    best = b""
    for quality in (100, 99, 98, 97, 96, 95):
        data = _encode(image, quality)
        if len(data) <= LARGE_TARGET_BYTES:
            best = data
            break
    if not best:
        raise RuntimeError("could not make a JPEG just under the 20 MiB cap")
    return best


def send_jpeg(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer 200 with `body` as a JPEG of its exact length."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def serve_on_loopback(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server on a free 127.0.0.1 port (not yet serving), and its host:port."""
    httpd = LoopbackServer(("127.0.0.1", 0), handler)
    return httpd, f"127.0.0.1:{httpd.server_address[1]}"


@dataclass
class ImageHost:
    """Serves /img/<name>.jpg (any query string) from memory on 127.0.0.1."""

    files: dict[str, Path]

    def __post_init__(self) -> None:
        bodies = {name: path.read_bytes() for name, path in self.files.items()}
        self.sizes = {name: len(body) for name, body in bodies.items()}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                match = re.fullmatch(r"/img/([\w-]+)\.jpg", self.path.split("?", 1)[0])
                body = bodies.get(match[1]) if match else None
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                send_jpeg(self, body)

        self._httpd, self.host_port = serve_on_loopback(Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str, index: int = 0) -> str:
        return f"http://{self.host_port}/img/{name}.jpg?i={index}"

    def start(self) -> ImageHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
