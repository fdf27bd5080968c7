"""Making and checking registry entries: :func:`pack_model` writes a checkpoint's weights and its card into a
registry folder, measuring the card's subset check on the spot; :func:`subset_psnr` measures it again
(``r3l models check``). The registry itself is :mod:`r3l.models.zoo`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from r3l.errors import R3LError
from r3l.evaluation.protocol import evaluate, summarize
from r3l.inference.denoiser import Denoiser, open_denoiser
from r3l.io.data import load_images
from r3l.io.files import atomic_write_bytes, write_json
from r3l.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from r3l.models.zoo import ModelCard, SubsetCheck


def subset_psnr(card: ModelCard, data_root: str | Path | None = None, device: str = "cpu") -> float:
    """Measure the card's subset PSNR again (``data_root``: the folder holding ``card.check.data``, default
    ``R3L_DATA``)."""
    root = Path(data_root or os.environ.get("R3L_DATA", "."))
    folder = root / card.check.data
    denoiser = open_denoiser(checkpoint=card.path, device=device)
    images = [im for im in load_images(folder, denoiser.channels, "data") if im.name in set(card.check.images)]
    missing = set(card.check.images) - {im.name for im in images}
    if missing:
        raise R3LError(f"{folder}: missing {', '.join(sorted(missing))} for model {card.name}'s check")
    rows = evaluate(denoiser, images, [card.check.sigma], card.check.seed, progress=False)
    return next(iter(summarize(rows).values()))["psnr"]


def _as_opponent_colour(ckpt, path):
    """A gray checkpoint as the colour model :class:`~r3l.models.networks.OpponentColour` of it, for a model whose
    options have a ``colour_space`` (R3N's)."""
    if not hasattr(ckpt.arch.options, "colour_space") or ckpt.arch.channels != 1 or ckpt.arch.options.colour_space:
        raise R3LError(f"{path}: an opponent-colour model is made from a gray checkpoint of a model with a "
                       f"colour_space option (r3n); this one is {ckpt.arch.describe()}")
    arch = replace(ckpt.arch, options=replace(ckpt.arch.options, channels=3, colour_space="opponent"))
    config = {**ckpt.config, "colour": "the gray network in an opponent colour space, each channel denoised as a "
                                      "gray image (no colour training)"}
    return Checkpoint(arch, {f"inner.{k}": v for k, v in ckpt.model.items()}, config, ckpt.episode, {})


def pack_model(checkpoint: str | Path, name: str, description: str, data_root: str | Path, out_dir: str | Path,
               images: list[str], sigma: float | None = None, seed: int = 0, training: dict | None = None,
               bsd68_psnr: dict[str, float] | None = None, data: str = "BSD68",
               results: dict[str, dict[str, float]] | None = None, opponent_colour: bool = False) -> ModelCard:
    """Write ``out_dir/<name>.safetensors`` (weights only) and its card, measuring the subset check here.
    ``opponent_colour``: pack a gray R3N as a colour model that denoises an opponent colour space's channels
    (:class:`r3l.models.networks.OpponentColour`; the same weights under ``inner.``)."""
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise R3LError(f"model name {name!r}: expected a plain name such as r3l-gray-s25")
    ckpt = load_checkpoint(checkpoint)
    if opponent_colour:
        ckpt = _as_opponent_colour(ckpt, checkpoint)
    config = ckpt.config
    env_sigma = ckpt.arch.task_options.get("sigma", config.get("env", {}).get("sigma", 25.0))
    out = Path(out_dir)
    weights = out / f"{name}.safetensors"
    save_checkpoint(weights, Checkpoint(ckpt.arch, ckpt.model, config, ckpt.episode, {}))
    check_sigma = float(sigma if sigma is not None else (env_sigma if not isinstance(env_sigma, list)
                                                        else sum(env_sigma) / 2))
    card = ModelCard(name, description, ckpt.arch, env_sigma, SubsetCheck(data, list(images), check_sigma,
                                                                           seed, 0.0),
                     ckpt.episode, {"config": config, **(training or {})}, dict(bsd68_psnr or {}),
                     dict(results or {}), weights)
    card.check.psnr = round(subset_psnr(card, data_root), 4)
    write_graph(card)
    write_json(card.to_dict(), out / f"{name}.json")
    return card


def write_graph(card: ModelCard) -> bool:
    """Write the model's onnxruntime graph beside its weights (``<name>.onnx``), so that its first use on a CPU
    costs no export; ``False`` (nothing written) where the export does not apply or is not installed."""
    from r3l.inference.engines import model_graph, onnxruntime_missing

    if onnxruntime_missing():
        return False
    denoiser = Denoiser.from_checkpoint(card.path, "cpu", engine="torch")
    try:
        graph = model_graph(denoiser.program)
    except R3LError:
        return False
    atomic_write_bytes(card.path.with_suffix(".onnx"), graph)
    return True
