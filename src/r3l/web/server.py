"""``r3l serve``: a local web page to try a denoiser on your own image.

The server is Python's standard ``http.server`` (threaded), with one static page (``index.html``) that talks to a
small JSON API; it adds no dependency to r3l. Denoising runs in one worker thread, one job at a time, with the
same code as ``r3l eval`` and ``r3l denoise`` (so the page's PSNR is eval's); the page polls the job for its
progress (the tiles of a large image).

API: ``GET /api/models``, ``GET /api/samples``, ``GET /api/sample/NAME`` (a PNG), ``POST /api/denoise?model=&
sigma=&seed=&name=`` with the image file as the body (→ ``{"job": ID}`` or ``{"error": ...}``), ``GET /api/job/ID``
(status, progress, PSNR/SSIM), ``GET /api/job/ID/noisy.png | denoised.png | stepK.png | download``.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image

from r3l.errors import R3LError
from r3l.io.files import to_json

PAGE = Path(__file__).with_name("index.html")
SAMPLES = ("camera", "astronaut", "coins", "moon", "chelsea", "coffee")
STEP_MAP_PIXELS = 1 << 22
"""Step maps need the whole trajectory in memory at once; beyond 4 megapixels the page shows none."""
KEPT_JOBS = 8


@dataclass
class Job:
    id: str
    status: str = "running"
    done: int = 0
    total: int = 1
    error: str = ""
    metrics: dict = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    """name → (bytes, content type)."""
    download_name: str = ""
    steps: int = 0
    warning: str = ""
    """A noise level outside the model's training range (:meth:`r3l.inference.denoiser.Denoiser.sigma_warning`)."""


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit PNG of a float ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` image in [0, 1] (preview)."""
    from r3l.metrics import to_uint8

    array = to_uint8(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class WebApp:
    """The models on offer, the jobs, and the one worker thread that runs them."""

    def __init__(self, models: dict[str, Callable], device: str, max_upload: int):
        self.loaders, self.device, self.max_upload = models, device, max_upload
        self.denoisers: dict[str, object] = {}
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.worker = ThreadPoolExecutor(max_workers=1)

    def model_list(self) -> list[dict]:
        return [{"name": name} for name in self.loaders]

    def denoiser(self, name: str):
        if name not in self.loaders:
            raise R3LError(f"model {name!r} is not offered here; choose one of {', '.join(self.loaders)}")
        if name not in self.denoisers:
            self.denoisers[name] = self.loaders[name]()
        return self.denoisers[name]

    def submit(self, data: bytes, name: str, model: str, sigma: float, seed: int) -> Job:
        """Check the upload at once (a bad one is answered with its error, no job), then queue the work."""
        from r3l.io.images import read_image_with_alpha

        if not data:
            raise R3LError(f"{name}: empty upload, expected an image file")
        if len(data) > self.max_upload:
            raise R3LError(f"{name}: {len(data) / 2**20:.1f} MB upload exceeds the limit of "
                           f"{self.max_upload / 2**20:.0f} MB (r3l serve --max-upload-mb)")
        if not 0 <= sigma <= 100:
            raise R3LError(f"sigma {sigma:g}: expected a noise level between 0 and 100")
        stem = Path(name).stem or "upload"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / (Path(name).name or "upload")
            path.write_bytes(data)
            try:
                image, alpha, info = read_image_with_alpha(path)
            except R3LError as exc:  # name the upload, not the temporary file
                raise R3LError(str(exc).replace(str(path), Path(name).name)) from None
        denoiser = self.denoiser(model)
        job = Job(uuid.uuid4().hex[:12])
        with self.lock:
            self.jobs[job.id] = job
            for old in list(self.jobs)[:-KEPT_JOBS]:
                self.jobs.pop(old)
        self.worker.submit(self._run, job, denoiser, image, alpha, info, stem, sigma, seed)
        return job

    def _run(self, job: Job, denoiser, image, alpha, info, stem: str, sigma: float, seed: int) -> None:
        try:
            self._denoise(job, denoiser, image, alpha, info, stem, sigma, seed)
            job.status = "done"
        except R3LError as exc:
            job.error, job.status = str(exc), "error"
        except Exception as exc:  # a bug: the page says so, the server keeps serving, the log has the trace
            traceback.print_exc(file=sys.stderr)
            job.error, job.status = f"internal error: {type(exc).__name__}: {exc}", "error"

    def _denoise(self, job: Job, denoiser, image, alpha, info, stem: str, sigma: float, seed: int) -> None:
        from r3l.degradation import noisy_version
        from r3l.evaluation.explain import step_maps, trajectory
        from r3l.evaluation.protocol import quality
        from r3l.io.images import output_bits, write_image

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        noisy = noisy_version(image, stem, sigma, seed) if sigma > 0 else image
        denoiser = denoiser.for_image(noisy)  # "auto": the default model for a gray or a colour image
        strength, estimated = (1.0, sigma) if sigma > 0 else denoiser.strength_for(image)
        if strength < 1.0:
            job.warning = (f"noise sigma about {estimated:.0f} (estimated): the model's change kept at strength "
                           f"{strength:.2f}, so that a nearly clean photo keeps its detail")
        else:
            job.warning = denoiser.sigma_warning(estimated, estimated=sigma == 0) or ""
        out = denoiser.denoise(noisy.astype(np.float32), progress, strength=strength)
        if sigma > 0:
            # Exactly r3l eval's protocol: seeded noise by image name, output clipped and rounded to 8 bits.
            job.metrics = {**quality(image, out, noisy), "sigma": sigma, "seed": seed}
        job.files["noisy.png"] = (png_bytes(noisy), "image/png")
        job.files["denoised.png"] = (png_bytes(out), "image/png")
        if denoiser.env is not None and image.shape[0] * image.shape[1] <= STEP_MAP_PIXELS:
            for k, colours in enumerate(step_maps(denoiser, trajectory(denoiser, noisy.astype(np.float32))), 1):
                job.files[f"step{k}.png"] = (png_bytes(colours), "image/png")
                job.steps = k
        # The download keeps the input's bit depth (8, 16 or float) and alpha channel.
        suffix = ".tif" if info.bits == 32 else ".png"
        job.download_name = f"{stem}_denoised{suffix}"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / job.download_name
            write_image(path, out, bits=output_bits(path, info.bits), alpha=alpha)
            job.files["download"] = (path.read_bytes(), "image/tiff" if suffix == ".tif" else "image/png")
        job.done = job.total

    def job_status(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise R3LError(f"job {job_id}: unknown or expired")
        return {"status": job.status, "done": job.done, "total": job.total, "error": job.error,
                "metrics": job.metrics, "steps": job.steps, "download_name": job.download_name,
                "warning": job.warning}


def sample_png(name: str) -> bytes:
    import skimage.data

    if name not in SAMPLES:
        raise R3LError(f"sample {name!r}: expected one of {', '.join(SAMPLES)}")
    array = getattr(skimage.data, name)()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    """The page's HTTP API over one :class:`WebApp` (``app``, set by :func:`make_handler`)."""

    server_version = "r3l"
    app: WebApp

    def log_message(self, format: str, *args) -> None:  # quiet: errors reach the page, not the console
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, status: int = HTTPStatus.OK) -> None:
        self._send(status, to_json(data).encode(), "application/json")

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except R3LError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self._json({"error": f"internal error: {type(exc).__name__}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/") if p]
        if not parts:
            return self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        if parts == ["api", "models"]:
            return self._json(self.app.model_list())
        if parts == ["api", "samples"]:
            return self._json(list(SAMPLES))
        if len(parts) == 3 and parts[:2] == ["api", "sample"]:
            return self._send(HTTPStatus.OK, sample_png(parts[2]), "image/png")
        if len(parts) == 3 and parts[:2] == ["api", "job"]:
            return self._json(self.app.job_status(parts[2]))
        if len(parts) == 4 and parts[:2] == ["api", "job"]:
            job = self.app.jobs.get(parts[2])
            if job is None or parts[3] not in job.files:
                raise R3LError(f"{'/'.join(parts[2:])}: no such result")
            body, kind = job.files[parts[3]]
            extra = {"Content-Disposition": f'attachment; filename="{job.download_name}"'} \
                if parts[3] == "download" else None
            return self._send(HTTPStatus.OK, body, kind, extra)
        self._json({"error": f"/{'/'.join(parts)}: not found"}, HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        url = urlparse(self.path)
        if url.path != "/api/denoise":
            return self._json({"error": f"{url.path}: not found"}, HTTPStatus.NOT_FOUND)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        name = query.get("name") or "upload.png"
        if length > self.app.max_upload:
            self.rfile.read(min(length, 1 << 20))  # read a little so the client sees the answer
            self.close_connection = True
            raise R3LError(f"{name}: {length / 2**20:.1f} MB upload exceeds the limit of "
                           f"{self.app.max_upload / 2**20:.0f} MB (r3l serve --max-upload-mb)")
        data = self.rfile.read(length)
        try:
            sigma, seed = float(query.get("sigma") or 0), int(query.get("seed") or 0)
        except ValueError:
            raise R3LError("sigma and seed: expected numbers") from None
        model = query.get("model") or next(iter(self.app.loaders))
        job = self.app.submit(data, name, model, sigma, seed)
        self._json({"job": job.id})


def make_handler(app: WebApp) -> type[BaseHTTPRequestHandler]:
    """The request handler class of a server for ``app``."""
    return type("AppHandler", (Handler,), {"app": app})


def serve(models: dict[str, Callable], host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          max_upload_mb: float = 100.0, ready: Callable[[str], None] | None = None) -> None:
    """Serve the page until interrupted; ``ready(url)`` is called once the socket listens."""
    app = WebApp(models, device, int(max_upload_mb * 2**20))
    try:
        httpd = ThreadingHTTPServer((host, port), make_handler(app))
    except OSError as exc:
        raise R3LError(f"{host}:{port}: cannot listen ({exc.strerror or exc})") from None
    httpd.daemon_threads = True
    url = f"http://{host if ':' not in host else f'[{host}]'}:{httpd.server_address[1]}/"
    if ready is not None:
        ready(url)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        app.worker.shutdown(wait=False, cancel_futures=True)


AUTO_MODEL = "auto (the default model for a gray or a colour image)"
"""The page's first model when it serves the registry: each upload gets the default that fits it."""


def model_loaders(checkpoints: list[str], names: list[str], device: str) -> dict[str, Callable]:
    """What the page offers: each ``--checkpoint`` (by file name), each ``--model NAME``, else every model of
    the registry; loaded on first use."""
    from r3l.inference.denoiser import open_denoiser
    from r3l.models.checkpoint import load_checkpoint
    from r3l.models.zoo import find_model, list_models

    loaders: dict[str, Callable] = {}
    if not checkpoints and not names:  # the registry: first the default model that fits each image
        loaders[AUTO_MODEL] = lambda: open_denoiser(device=device)
    for path in checkpoints:
        load_checkpoint(path)  # a bad file is refused before the server starts
        loaders[Path(path).name] = lambda path=path: open_denoiser(checkpoint=path, device=device)
    for card in [find_model(name) for name in names] or ([] if checkpoints else list_models()):
        loaders[card.name] = lambda card=card: open_denoiser(model=card.name, device=device)
    if list(loaders) == [AUTO_MODEL]:
        loaders.clear()
    if not loaders:
        raise R3LError("no model to serve: no trained models are installed; pass --checkpoint CKPT (or add models with "
                       "R3L_MODELS)")
    return loaders
