"""The model registry: trained models that ship with r3l, and folders of models a user adds.

A registry folder holds ``<name>.safetensors`` (an r3l checkpoint without optimiser state) and ``<name>.json``,
the model's card: what it is (architecture, channels, σ), how it was made (training config, episodes, GPU and
minutes) and what it measured (BSD68 PSNR per σ from ``r3l benchmark``, and the PSNR on a fixed subset that a
test reproduces on the CPU). r3l's own models live in the package (``r3l/models/weights/``); ``R3L_MODELS`` names more
folders, separated by ``:``, searched first. ``r3l models`` lists them all. This module only reads the registry;
:mod:`r3l.evaluation.cards` measures a card's check and packs a checkpoint into a folder (``r3l models pack``).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r3l.errors import R3LError
from r3l.models.spec import ArchSpec

PACKAGE_FOLDER = Path(__file__).parent / "weights"
GRAY_DEFAULTS = ("r3l-gray-blind", "r3n-gray-blind", "r3l-gray-s25", "r3n-gray-s25")
"""The gray models a default denoiser is taken from, best first: a blind model (trained for a range of σ, so it
suits noise of unknown level) before one trained at σ 25, R3L before R3N (its
deterministic counterpart, trained from the same initialisation)."""
COLOUR_DEFAULTS = ("r3l-color-blind", "r3n-color-blind", "r3l-color-s25", "r3n-color-s25")
"""The same for colour images."""
DEFAULT_MODEL = GRAY_DEFAULTS[0]
"""What ``r3l denoise`` and :meth:`Denoiser.pretrained` use first for a gray image: the blind gray R3L."""
DEFAULT_COLOUR_MODEL = COLOUR_DEFAULTS[0]
"""What they use first for colour images; without any colour model, a gray model denoises each channel."""
DEFAULT_ORDER = {
    1: GRAY_DEFAULTS + COLOUR_DEFAULTS,
    3: COLOUR_DEFAULTS + GRAY_DEFAULTS,
}
"""For images of 1 or 3 channels, the models a default denoiser is taken from, the first installed one winning."""


@dataclass
class SubsetCheck:
    """A PSNR that anyone can reproduce in seconds on the CPU: ``images`` of ``data`` at ``sigma``, noise seed
    ``seed``, the evaluation protocol of ``r3l eval``."""

    data: str
    images: list[str]
    sigma: float
    seed: int
    psnr: float


@dataclass
class ModelCard:
    name: str
    description: str
    arch: ArchSpec
    sigma: float | list[float]
    """The training noise level (a list ``[low, high]`` for a blind model)."""
    check: SubsetCheck
    episodes: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    """How it was made: ``config`` (the training config), ``device``, ``minutes``."""
    bsd68_psnr: dict[str, float] = field(default_factory=dict)
    """BSD68 PSNR by test σ, from ``r3l benchmark`` with seed 0."""
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    """Other measured PSNRs by data set name and test σ (``r3l eval --json`` of the whole set, seed 0), e.g.
    ``{"Set12": {"25": 30.1}}``."""
    path: Path = Path()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        out["arch"] = self.arch.to_dict()
        return out


def _card(data: Any, path: Path) -> ModelCard:
    try:
        check = SubsetCheck(**data.pop("check"))
        arch = ArchSpec.coerce(data.pop("arch"), f"{path}: card field arch")
        card = ModelCard(**data, arch=arch, check=check)
    except (TypeError, KeyError, AttributeError):
        raise R3LError(f"{path}: not an r3l model card (expected name, description, arch, sigma, check)") from None
    card.path = path.with_suffix(".safetensors")
    if card.name != path.stem:
        raise R3LError(f"{path}: the card names model {card.name!r}; its file name says {path.stem!r}")
    if not card.path.is_file():
        raise R3LError(f"{path}: the weights {card.path.name} are missing beside it")
    return card


def folders() -> list[Path]:
    """Registry folders in search order: those in ``R3L_MODELS``, then the package's own."""
    extra = [Path(p).expanduser() for p in os.environ.get("R3L_MODELS", "").split(os.pathsep) if p]
    return [*extra, PACKAGE_FOLDER]


_LISTED: dict[tuple, list[ModelCard]] = {}
"""The last registry read, by the names, sizes and times of its card files: a command that asks several times
(the default model, its graph, each image's default) reads the cards once while they stay as they are."""


def list_models() -> list[ModelCard]:
    """Every model in every registry folder (a name in an earlier folder hides the same name later)."""
    files = []
    for folder in folders():
        if not folder.is_dir():
            if folder != PACKAGE_FOLDER:
                raise R3LError(f"R3L_MODELS: {folder}: no such folder")
            continue
        files += sorted(folder.glob("*.json"))
    try:
        key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:  # a card gone while listing: read what is there
        key = None
    if key is not None and key in _LISTED and all(card.path.is_file() for card in _LISTED[key]):
        return [copy.copy(card) for card in _LISTED[key]]
    cards: dict[str, ModelCard] = {}
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            raise R3LError(f"{path}: unreadable model card (expected JSON)") from None
        if not isinstance(data, dict):
            raise R3LError(f"{path}: not an r3l model card (expected a JSON object)")
        cards.setdefault(path.stem, _card(data, path))
    _LISTED.clear()
    if key is not None:
        _LISTED[key] = [copy.copy(card) for card in cards.values()]
    return list(cards.values())


def find_model(name: str | None = None) -> ModelCard:
    """The model called ``name`` (``None``: :data:`DEFAULT_MODEL`), or a clear error listing what there is."""
    name = name or DEFAULT_MODEL
    models = list_models()
    for card in models:
        if card.name == name:
            return card
    if not models:
        raise R3LError(f"model {name!r}: no trained models are installed (r3l's own live in the package's "
                       "r3l/models/weights/); pass --checkpoint CKPT, or add a folder of models with R3L_MODELS")
    raise R3LError(f"model {name!r} not found; available: {', '.join(c.name for c in models)} (r3l models)")


def default_model(channels: int = 1) -> ModelCard:
    """The model for images of ``channels`` channels when none is named: the first installed of
    :data:`DEFAULT_ORDER` — for gray images a gray model (blind first), else a colour one (a colour model sees a
    gray image as three equal channels); for colour images a colour model, else a gray model per channel."""
    installed = {card.name for card in list_models()}
    order = DEFAULT_ORDER[3 if channels == 3 else 1]
    return find_model(next((name for name in order if name in installed), order[0]))


#: The BSD68 noise levels of :func:`zoo_table`'s columns.
TABLE_SIGMAS = ("0", "15", "25", "35", "50")


def zoo_table(cards: list[ModelCard]) -> str:
    """The models as one Markdown table (docs/models.md holds the shipped ones'): name, network, channels,
    training σ and minutes, BSD68 PSNR at :data:`TABLE_SIGMAS`, Set12 and CBSD68 at σ 25, file size."""
    def db(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "–"

    head = ["model", "network", "input", "trained at σ", "training (min)",
            *(f"BSD68 σ {s}" for s in TABLE_SIGMAS), "Set12 σ 25", "CBSD68 σ 25", "file"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for card in cards:
        sigma = card.sigma if not isinstance(card.sigma, list) else f"{card.sigma[0]:g}–{card.sigma[1]:g} (blind)"
        sigma = f"{sigma:g}" if isinstance(sigma, float) else sigma
        minutes = card.training.get("minutes")
        cells = [f"`{card.name}`", card.arch.name.upper(), "gray" if card.arch.channels == 1
                 else "colour", sigma, f"{minutes:g}" if isinstance(minutes, (int, float)) else "–",
                 *(db(card.bsd68_psnr.get(s, card.results.get("BSD68", {}).get(s))) for s in TABLE_SIGMAS),
                 db(card.results.get("Set12", {}).get("25")), db(card.results.get("CBSD68", {}).get("25")),
                 f"{card.path.stat().st_size / 1e6:.2f} MB" if card.path.is_file() else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
