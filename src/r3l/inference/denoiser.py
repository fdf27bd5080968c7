"""Inference: any trained network as a function from noisy to clean images."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from r3l.algos.optim import autocast
from r3l.errors import R3LError, warn
from r3l.inference.engines import OnnxRuntimeEngine, resolve_engine
from r3l.inference.program import DECODINGS, InferenceProgram, ensemble_mean
from r3l.models.checkpoint import load_checkpoint, load_weights
from r3l.models.networks import dncnn_from_weights
from r3l.models.spec import ArchSpec, build_network
from r3l.runtime import cpu_prefers_channels_last, pick_device
from r3l.tasks import stored_task

PRECISIONS = ("fp32", "bf16", "fp16")


def _training_sigma(task_options: dict, config: dict) -> tuple[float, float] | None:
    """``(low, high)`` of the Gaussian noise level a network was trained at: its checkpoint's task options hold it
    (format version 3); files written before them, only their stored config's ``env``. ``None`` for other noise
    models or none."""
    env = task_options if "sigma" in task_options else config.get("env") if isinstance(config, dict) else None
    if not isinstance(env, dict) or env.get("noise", "gaussian") != "gaussian" or "sigma" not in env:
        return None
    sigma = env["sigma"]
    try:
        low, high = (sigma if isinstance(sigma, list) else [sigma, sigma])
        return float(low), float(high)
    except (TypeError, ValueError):
        return None


class Denoiser:
    """A denoising network with its inference rule (:class:`~r3l.inference.program.InferenceProgram`), on an engine,
    for images of any size.

    - ``r3l``: greedy (argmax) actions for ``steps`` steps, each adding its residual;
    - ``r3n``: its recurrent residual updates;
    - ``dncnn``: one pass, noisy minus predicted noise.

    Outputs are clipped to [0, 1]. ``precision`` is ``fp32`` (exact, the default) or ``bf16``/``fp16`` (autocast:
    faster on GPUs, a few near-tied greedy actions may differ); ``compile`` runs the network through
    ``torch.compile``. ``engine`` (:mod:`r3l.inference.engines`): ``torch``, ``onnxruntime`` (the whole inference in
    onnxruntime, on a CPU), or ``auto`` (the default: onnxruntime where it applies and is installed, else
    torch). Example::

        from r3l import Denoiser
        clean = Denoiser.from_checkpoint("runs/demo/best.safetensors").denoise(noisy_uint8_array)
    """

    TILE = 768
    """Default tile side. Inference holds about 1 kB per pixel of a tile with its margins (paper-size R3L, fp32:
    measured 1.2 GB of process memory for a 960 × 960 piece), so 768 + 2 × 96 keeps a 4096 × 4096 image under
    2 GB, and the margins add 56% work over untiled inference."""

    def __init__(self, net: nn.Module, arch: ArchSpec | dict, device: str | torch.device = "auto", tile: int = TILE,
                 precision: str = "fp32", channels_last: bool | None = None, compile: bool = False,
                 decoding: str = "greedy", self_ensemble: bool = False, engine: str = "auto"):
        if precision not in PRECISIONS:
            raise R3LError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if decoding not in DECODINGS:
            raise R3LError(f"decoding {decoding!r}: expected one of {', '.join(DECODINGS)}")
        arch = ArchSpec.coerce(arch)
        if decoding != "greedy" and not arch.entry.policy:
            raise R3LError(f"decoding {decoding!r} applies to R3L policies; this model is {arch.name}")
        self.arch, self.tile, self.precision = arch, tile, precision
        self.decoding, self.self_ensemble = decoding, self_ensemble
        self.device = pick_device(device) if isinstance(device, str) else device
        self.net = net.to(self.device).eval()
        # NHWC convolutions are cuDNN's fast path, and oneDNN's on AVX-512 CPUs (None: on for those).
        if channels_last is None:
            channels_last = self.device.type == "cuda" or (self.device.type == "cpu" and cpu_prefers_channels_last())
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.memory_format)
        self.channels = arch.channels
        self.env = None
        if arch.entry.policy:
            # Inference applies the task's transition alone (no ground truth, no degradation).
            self.env = stored_task(arch.task, arch.task_options)
        self.program = InferenceProgram(self.net, self.env, self.channels, decoding)
        """One view's inference in PyTorch (no self-ensemble, which :meth:`_run` adds around either engine)."""
        self.program.autocast = lambda: autocast(self.device, self.precision)
        self.compiled = compile
        if compile:
            # Shapes vary between images and tiles: sizes that recur become dynamic after one recompilation.
            self.program.act = torch.compile(self.program.act)
        self.training_sigma: tuple[float, float] | None = None
        """The Gaussian noise levels the network was trained for, ``(low, high)`` (equal for one σ), when known
        (r3l checkpoints); :meth:`sigma_warning` compares a level with it."""
        self.engine = resolve_engine(engine, self.program, self.device, precision, compile, arch.task)
        """``torch`` or ``onnxruntime``: what runs :meth:`__call__` (:meth:`trajectory` is always PyTorch's)."""
        self._onnxruntime: OnnxRuntimeEngine | None = None
        self._fallback = engine != "onnxruntime"  # auto falls back to torch if onnxruntime cannot run the graph
        self.name: str | None = None
        """The registry model's name (:meth:`pretrained`), else None."""
        self._defaults: dict | None = None
        """For the default model: the options to load the default of another channel count with."""
        self._others: dict[str, Denoiser] = {}

    def prepare(self) -> "Denoiser":
        """Make the engine ready now (onnxruntime: the exported graph and its session), not at the first image;
        with ``auto``, a graph that onnxruntime cannot run is reported in one warning and PyTorch runs instead."""

        if self.engine == "onnxruntime" and self._onnxruntime is None:
            try:
                self._onnxruntime = OnnxRuntimeEngine(self.program, self.arch.to_dict(), self._shipped_graph())
            except R3LError as exc:
                if not self._fallback:
                    raise R3LError(f"engine onnxruntime: {exc}") from None
                warn(f"onnxruntime engine unavailable ({exc}); running PyTorch")
                self.engine = "torch"
        return self

    def _shipped_graph(self) -> Path | None:
        """The graph a registry model ships beside its weights (``<name>.onnx``), for greedy decoding."""
        if self.name is None or self.decoding != "greedy":
            return None
        from r3l.models.zoo import find_model

        return find_model(self.name).path.with_suffix(".onnx")

    def whole_program(self, steps: int | None = None) -> InferenceProgram:
        """The whole inference (``steps`` policy steps, default the task's; the self-ensemble if on) as one module,
        for export (:mod:`r3l.inference.export`)."""
        if steps is not None and self.env is None:
            raise R3LError(f"--steps applies to R3L policies; this model is {self.arch.name}")
        return InferenceProgram(self.net, self.env, self.channels, self.decoding, steps, self.self_ensemble)

    def describe(self) -> str:
        """The engine as one phrase, e.g. ``onnxruntime, fp32, 2 threads`` or ``torch cpu, fp32, channels-last,
        2 threads``."""
        threads = f"{torch.get_num_threads()} threads" if self.device.type == "cpu" else None
        if self.engine == "onnxruntime":
            return f"onnxruntime, fp32, {threads}"
        layout = "channels-last" if self.memory_format == torch.channels_last else "contiguous"
        parts = [f"torch {self.device}", self.precision, layout, "compiled" if self.compiled else None, threads]
        return ", ".join(p for p in parts if p)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        precision: str = "fp32", compile: bool = False, **options) -> "Denoiser":
        """An r3l checkpoint (``.safetensors``); ``options`` as for the constructor (``decoding``, ...)."""
        ckpt = load_checkpoint(path)
        net = build_network(ckpt.arch)
        load_weights(net, ckpt, ckpt.arch, path)
        denoiser = cls(net, ckpt.arch, device, precision=precision, compile=compile, **options)
        denoiser.training_sigma = _training_sigma(ckpt.arch.task_options, ckpt.config)
        return denoiser

    def sigma_warning(self, sigma: float, estimated: bool = False) -> str | None:
        """A sentence if Gaussian noise of level ``sigma`` lies outside the levels this network was trained for
        (by more than ``max(5, 20%)`` of the nearer bound: below about 5 levels a photo's own texture and a clean
        image look alike), else ``None``. ``estimated``: ``sigma`` comes from :func:`r3l.degradation.
        estimate_gaussian_sigma`` and is worded so. ``None`` too for a model of another task than denoising."""
        if self.training_sigma is None or not (self.env is None or self.env.denoises):
            return None
        low, high = self.training_sigma
        trained = f"{low:g}" if low == high else f"{low:g}-{high:g}"
        level = f"about {sigma:.0f}" if estimated else f"{sigma:g}"
        if sigma > high + max(5.0, 0.2 * high):
            effect = "expect noise left in"
        elif sigma < low - max(5.0, 0.2 * low):
            effect = "expect detail smoothed away"
        else:
            return None
        hint = "" if low < high else " (blind models, trained for a range of sigma, are in r3l models)"
        return f"noise sigma {level}, outside the model's training sigma {trained}: {effect}{hint}"

    def image_noise_warning(self, image: np.ndarray) -> str | None:
        """:meth:`sigma_warning` for an image of unknown noise (``(H, W, C)`` floats in [0, 1]): its Gaussian
        noise level estimated (:func:`r3l.degradation.estimate_gaussian_sigma`)."""
        from r3l.degradation import estimate_gaussian_sigma

        if self.training_sigma is None:  # nothing to compare with: skip the estimate
            return None
        pixels = torch.from_numpy(np.ascontiguousarray(image)).movedim(-1, 0)
        return self.sigma_warning(estimate_gaussian_sigma(pixels), estimated=True)

    @classmethod
    def from_dncnn_weights(cls, path: str | Path, device: str | torch.device = "auto",
                           precision: str = "fp32", compile: bool = False, **options) -> "Denoiser":
        """KAIR's DnCNN ``.pth`` (read with ``weights_only=True``)."""
        net = dncnn_from_weights(path)
        arch = ArchSpec.of("dncnn", channels=net.channels, features=net.features, depth=net.depth)
        return cls(net, arch, device, precision=precision, compile=compile, **options)

    @classmethod
    def from_ircnn_weights(cls, path: str | Path, device: str | torch.device = "auto", sigma: float = 25.0,
                           precision: str = "fp32", compile: bool = False, **options) -> "Denoiser":
        """IRCNN's gray denoiser: a ``.caffemodel`` or KAIR's ``ircnn_gray.pth`` (its entry for ``sigma``)."""
        from r3l.models.ircnn import ircnn_from_weights

        net = ircnn_from_weights(path, sigma)
        arch = ArchSpec.of("ircnn", channels=net.channels, features=net.features)
        return cls(net, arch, device, precision=precision, compile=compile, **options)

    @classmethod
    def from_pixelrl_weights(cls, path: str | Path, device: str | torch.device = "auto",
                             precision: str = "fp32", compile: bool = False, **options) -> "Denoiser":
        """pixelRL's published ``pretrained_<σ>.npz`` (:mod:`r3l.models.pixelrl`): its 9 filter actions, 5 greedy
        steps."""
        from r3l.models.pixelrl import PIXELRL_ARCH, pixelrl_from_npz

        return cls(pixelrl_from_npz(path), PIXELRL_ARCH, device, precision=precision, compile=compile, **options)

    @classmethod
    def pretrained(cls, name: str | None = None, device: str | torch.device = "auto", precision: str = "fp32",
                   compile: bool = False, channels: int = 1, **options) -> "Denoiser":
        """A model of r3l's registry by name (``r3l models`` lists them); ``None``: the default model for images
        of ``channels`` channels (:func:`r3l.models.zoo.default_model`: a blind gray model first; for 3 channels
        a colour one when installed)."""
        from r3l.models.zoo import default_model, find_model

        card = find_model(name) if name else default_model(channels)
        denoiser = cls.from_checkpoint(card.path, device, precision, compile, **options)
        denoiser.name = card.name
        if name is None:  # the default model: each image gets the default for its channels (for_image)
            denoiser._defaults = {"device": device, "precision": precision, "compile": compile, **options}
        return denoiser

    def for_image(self, image: np.ndarray) -> "Denoiser":
        """The denoiser :meth:`denoise` runs on ``image`` ``(H, W)`` or ``(H, W, C)``: this one, except that the
        default model (:meth:`pretrained` without a name) hands a colour image to the colour default and a gray
        one to the gray default, as ``r3l denoise`` does (each loaded once)."""
        from r3l.models.zoo import default_model

        if self._defaults is None or not isinstance(image, np.ndarray):
            return self
        channels = 3 if image.ndim == 3 and image.shape[2] >= 3 else 1
        name = default_model(channels).name
        if name == self.name:
            return self
        if name not in self._others:
            self._others[name] = Denoiser.pretrained(name, **self._defaults).prepare()
        return self._others[name]

    @torch.no_grad()
    def trajectory(self, noisy: torch.Tensor) -> list[torch.Tensor]:
        """R3L only: the unclipped estimate after each step, ``steps + 1`` tensors ``(B, C, H, W)``."""
        if not self.program.policy:
            raise R3LError(f"a trajectory is a policy's steps; {self.arch.name} makes one pass")
        return self.program.trajectory(noisy.contiguous(memory_format=self.memory_format))

    @property
    def radius(self) -> int:
        """How far (in pixels) the final output at a pixel depends on the input: the receptive-field radius of
        one pass times the number of recurrent passes. Tiles overlap by this much, so tiling changes nothing."""
        per_pass = self.arch.entry.pass_radius(self.net)
        reach = self.env.reach if self.env is not None else 0  # pixels a transition itself reads (filters)
        return (per_pass + reach) * self.arch.steps

    def _run_once(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine == "onnxruntime" and self.prepare().engine == "onnxruntime":
            return self._onnxruntime(x)
        return self.program.once(x.contiguous(memory_format=self.memory_format))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The network's estimate; with ``self_ensemble``, the mean over the 8 flips and 90° rotations of the
        input, each estimate turned back (8× the work)."""
        return ensemble_mean(self._run_once, x) if self.self_ensemble else self._run_once(x)

    @torch.no_grad()
    def __call__(self, noisy: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Denoise ``(B, C, H, W)`` float images; returns them clipped to [0, 1], on the input's device.

        Images larger than ``tile`` are processed in ``tile × tile`` pieces, each read with a margin of
        :attr:`radius` pixels, so the result equals untiled inference while memory stays bounded.
        ``progress(done, total)`` is called after each piece.
        """
        b, c, h, w = noisy.shape
        if h <= self.tile and w <= self.tile:
            result = self._run(noisy.to(self.device, torch.float32)).clamp_(0.0, 1.0)
            if progress is not None:
                progress(1, 1)
            return result.to(noisy.device, memory_format=torch.contiguous_format)
        out = torch.empty((b, c, h, w), dtype=torch.float32, device=noisy.device)
        m = self.radius
        total = -(-h // self.tile) * -(-w // self.tile)
        done = 0
        for top in range(0, h, self.tile):
            for left in range(0, w, self.tile):
                bottom, right = min(top + self.tile, h), min(left + self.tile, w)
                t0, l0 = max(top - m, 0), max(left - m, 0)
                piece = noisy[:, :, t0 : min(bottom + m, h), l0 : min(right + m, w)]
                result = self._run(piece.to(self.device, torch.float32))
                out[:, :, top:bottom, left:right] = result[:, :, top - t0 : bottom - t0, left - l0 : right - l0]
                done += 1
                if progress is not None:
                    progress(done, total)
        return out.clamp_(0.0, 1.0)

    @staticmethod
    def strength_for(image: np.ndarray) -> tuple[float, float]:
        """The ``auto`` strength of :meth:`denoise` for ``image`` and the noise level it is based on: ``(strength,
        σ)``, σ the image's estimated Gaussian noise on the 0–255 scale (:func:`r3l.degradation.
        estimate_gaussian_sigma`). Full strength from σ ≈ :data:`AUTO_STRENGTH_RAMP`'s upper end, none at or below
        its lower end (a clean photo's texture alone estimates up to about that), linear in between."""
        from r3l.degradation import estimate_gaussian_sigma

        x, _, _ = _checked_image(image)
        sigma = estimate_gaussian_sigma(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))))
        low, high = AUTO_STRENGTH_RAMP
        return min(1.0, max(0.0, (sigma - low) / (high - low))), sigma

    def denoise(self, image: np.ndarray, progress: Callable[[int, int], None] | None = None,
                strength: float | str = "auto") -> np.ndarray:
        """Denoise one image ``(H, W)`` or ``(H, W, C)``: uint8, uint16 or float in [0, 1]; same shape and dtype out.

        C is 1 (gray) or 3 (colour), or 2 / 4 with an alpha channel last, which is returned unchanged. A gray
        model treats each colour channel as its own image; a colour model sees a gray image copied to three
        channels and returns their mean. Anything else (other integer types, whose scale is ambiguous, NaN, a
        batch, an empty array, a list) is refused with an :class:`~r3l.errors.R3LError` naming the problem.
        ``progress(done, total)`` follows the tiles of a large image.

        ``strength`` in [0, 1] blends the model's output with the input (``input + strength · (output − input)``;
        0 returns the input without running the model); ``auto`` (default) takes :meth:`strength_for`'s, which
        is 1 for visibly noisy images and leaves a clean photo's detail alone, where any denoiser would smooth
        it (the blind model makes a clean BSD68 image 36 dB).
        """
        chosen = self.for_image(image)
        if chosen is not self:
            return chosen.denoise(image, progress, strength)
        x, alpha, scale = _checked_image(image)
        if strength == "auto":
            strength = self.strength_for(image)[0]
        if isinstance(strength, str) or not 0.0 <= strength <= 1.0:
            raise R3LError(f"strength {strength!r}: expected a number in [0, 1] or 'auto'")
        dtype = image.dtype
        tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        c = tensor.shape[0]
        if strength == 0.0:
            out = tensor
        elif self.channels == 1:
            out = self(tensor[:, None], progress)[:, 0]
        elif c == 1:
            out = self(tensor.expand(3, -1, -1)[None], progress)[0].mean(0, keepdim=True)
        else:
            out = self(tensor[None], progress)[0]
        if 0.0 < strength < 1.0:
            out = tensor + strength * (out.cpu() - tensor)
        result = out.cpu().numpy().transpose(1, 2, 0)
        if scale != 1.0:
            result = np.round(result * scale).astype(dtype)
        else:
            result = result.astype(dtype, copy=False)
        if alpha is not None:
            result = np.concatenate([result, alpha], axis=2)
        return result[:, :, 0] if image.ndim == 2 else result


AUTO_STRENGTH_RAMP = (3.0, 10.0)
"""Estimated noise σ (0–255) from which :meth:`Denoiser.denoise`'s ``auto`` strength rises from 0 to 1. Measured
with the blind gray model on 200² crops of BSD68 and scikit-image photos at σ 0/2/5/10/15: the best blend with the
input is 0 for a clean image, 0.1–0.3 at σ 2, 0.3–0.7 at σ 5 and 0.6–1 from σ 10; the estimate says 1–2.5 for
most clean photos, 7 for a heavily textured one, and σ + 0.3 to σ + 3 for a noisy one (docs/experiments.md)."""


def _checked_image(image: object) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``image`` as float32 ``(H, W, C)`` in [0, 1] (C = 1 or 3), its alpha ``(H, W, 1)`` as given or None, and
    the scale of its integer type (1.0 for floats); an :class:`R3LError` for anything ambiguous."""
    if not isinstance(image, np.ndarray):
        raise R3LError(f"Denoiser.denoise takes a NumPy array (H, W) or (H, W, C), got {type(image).__name__}; "
                       "for (B, C, H, W) float tensors call the Denoiser itself")
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise R3LError(f"image of shape {image.shape}: expected (H, W) or (H, W, C) with C = 1 or 3 "
                       "(2 or 4 with alpha), non-empty")
    scales = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
    if image.dtype in scales:
        scale = scales[image.dtype]
    elif image.dtype in (np.float16, np.float32, np.float64):
        scale = 1.0
        if not np.isfinite(image).all():
            raise R3LError(f"{image.dtype} image holds NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < -1.0 or high > 2.0:  # room for unclipped noise; beyond it, a 0-255 image
            raise R3LError(f"{image.dtype} image with values in [{low:.4g}, {high:.4g}]: float images are "
                           "intensities in [0, 1] (divide by 255, or pass uint8)")
    else:
        raise R3LError(f"{image.dtype} image: its scale is ambiguous; pass uint8 (0-255), uint16 (0-65535) "
                       "or float in [0, 1]")
    x = image[:, :, None] if image.ndim == 2 else image
    alpha = None
    if x.shape[2] in (2, 4):
        x, alpha = x[:, :, :-1], x[:, :, -1:]
    return np.asarray(x, dtype=np.float32) / np.float32(scale), alpha, scale


#: Third-party networks that :func:`open_denoiser` reads from their own weight files, and what each file is.
WEIGHT_FORMATS = {
    "dncnn": "KAIR's dncnn_25.pth",
    "ircnn": "IRCNN's zhang_cvpr17_denoise_<sigma>_gray.caffemodel or KAIR's ircnn_gray.pth",
    "pixelrl": "pixelRL's published pretrained_<sigma>.npz",
}


#: Of :data:`WEIGHT_FORMATS`, the networks that are policies (a decoding other than greedy applies).
POLICY_WEIGHT_MODELS = ("pixelrl",)


def check_model_choice(checkpoint: str | Path | None = None, model: str | None = None,
                       weights: str | Path | None = None, decoding: str = "greedy") -> None:
    """Refuse contradictory model arguments of :func:`open_denoiser` before anything is loaded (each message
    names the command line's flags, which are these arguments)."""
    if checkpoint and (model or weights):
        raise R3LError("give either --checkpoint CKPT or --model NAME, not both")
    if weights and model not in WEIGHT_FORMATS:
        raise R3LError("--weights FILE needs --model dncnn, --model ircnn or --model pixelrl")
    if model in WEIGHT_FORMATS and not weights:
        raise R3LError(f"--model {model} needs --weights PATH ({WEIGHT_FORMATS[model]})")
    if decoding != "greedy" and model in WEIGHT_FORMATS and model not in POLICY_WEIGHT_MODELS:
        raise R3LError(f"--decode {decoding} applies to R3L policies, not to --model {model}")


def open_denoiser(checkpoint: str | Path | None = None, model: str | None = None, weights: str | Path | None = None,
                  channels: int = 1, weights_sigma: float = 25.0, device: str | torch.device = "auto",
                  **options) -> Denoiser:
    """The one way r3l obtains a denoiser (the CLI, the benchmark, the web page, the zoo's checks, export):

    - ``checkpoint``: an r3l checkpoint file;
    - ``model`` in :data:`WEIGHT_FORMATS` with ``weights``: that third-party network from its file
      (``weights_sigma``: the entry of KAIR's multi-level IRCNN file);
    - ``model``: a model of the registry by name;
    - neither: the registry's default model for images of ``channels`` channels.

    ``options`` go to :class:`Denoiser` (``precision``, ``engine``, ``decoding``, ...). Contradictory arguments
    are refused before anything is read (:func:`check_model_choice`)."""
    check_model_choice(checkpoint, model, weights, options.get("decoding", "greedy"))
    if model == "dncnn":
        return Denoiser.from_dncnn_weights(weights, device, **options)
    if model == "ircnn":
        return Denoiser.from_ircnn_weights(weights, device, sigma=weights_sigma, **options)
    if model == "pixelrl":
        return Denoiser.from_pixelrl_weights(weights, device, **options)
    if checkpoint:
        return Denoiser.from_checkpoint(checkpoint, device, **options)
    return Denoiser.pretrained(model, device, channels=channels, **options)
