"""Where each backbone's starting weights come from, resolved once before any work starts.

`pretrained` is `none`, `imagenet` (timm's own weights through the Hugging Face cache), `auto` (those
weights where the cache already holds them, random elsewhere: the embedded default runs offline) or a
folder with one `<backbone>.safetensors` / `<backbone>.pth` per backbone, for machines without the hub.

Every source ends as a local file, checked here: timm loads the checkpoint strictly into the full
classification model (its own loader and key filter), because the `features_only` encoders load
non-strictly and a file of another architecture would otherwise leave them random without a word.
A missing, unreadable or foreign file is a `ConfigError` naming it. Trials then build the encoder
from the same file (`Encoder(pretrained_file=...)`), so no trial touches the network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import huggingface_hub
import timm
import torch
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

from nas.errors import ConfigError
from nas.infra.files import sha256_file

Kind = Literal["none", "imagenet", "folder"]
SETTINGS = ("auto", "none", "imagenet")
FOLDER_SUFFIXES = (".safetensors", ".pth")
# The files timm's hub loader looks for, in its order (`timm.models._hub`: the safe alternative first).
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class WeightSource:
    """A backbone's starting weights: `file` is None for random weights, with `note` saying why."""

    kind: Kind
    file: Path | None = None
    sha256: str | None = None
    note: str | None = None

    def record(self) -> dict[str, Any]:
        """What a trial record says about it: `{"source": ..., "file": ..., "sha256": ...}`."""
        if self.file is None:
            return {"source": "none"}
        return {"source": self.kind, "file": str(self.file), "sha256": self.sha256}


RANDOM = WeightSource("none")


@contextmanager
def quiet_timm() -> Iterator[None]:
    """Silence timm's warning about the classifier keys a features-only encoder leaves unused."""
    logger = logging.getLogger("timm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _mismatch(backbone: str, state: dict[str, torch.Tensor]) -> str:
    """One line on how `state` differs from `backbone`'s own state dict (for the error message)."""
    own = timm.create_model(backbone, pretrained=False).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensor(s) of another shape, e.g. {k} {tuple(state[k].shape)} "
                     f"where {backbone} has {tuple(own[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} of {len(own)} tensors missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unknown tensor(s), e.g. {unexpected[0]}")
    return "; ".join(parts) or "timm could not load it"


def check_file(backbone: str, path: Path, kind: Kind) -> WeightSource:
    """`path` as the source of `backbone`'s weights, once timm has loaded it strictly; ConfigError if not."""
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # a truncated or foreign file: torch and safetensors raise many kinds
        raise ConfigError(path, f"cannot read weights for {backbone} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    try:
        with quiet_timm():
            timm.create_model(backbone, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    except RuntimeError:
        raise ConfigError(path, f"not weights of timm's {backbone}: {_mismatch(backbone, state)}") from None
    return WeightSource(kind, path, sha256_file(path))


def hub_location(backbone: str) -> tuple[str, str | None, tuple[str, ...]] | None:
    """(repo id, revision, candidate file names) of timm's default weights for `backbone`, if on the hub."""
    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, revision or None, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES


def cached_hub_file(backbone: str) -> Path | None:
    """The backbone's ImageNet weights if the Hugging Face cache holds them; never a network call."""
    where = hub_location(backbone)
    if where is None:
        return None
    repo, revision, names = where
    for name in names:
        found = huggingface_hub.try_to_load_from_cache(repo, name, revision=revision)
        if isinstance(found, str):
            return Path(found)
    return None


def download_hub_file(backbone: str) -> tuple[Path | None, str]:
    """The backbone's ImageNet weights from the cache or the hub; (None, why) when neither has them."""
    where = hub_location(backbone)
    if where is None:
        return None, "timm has no hub weights for it"
    repo, revision, names = where
    for name in names:
        try:
            return Path(huggingface_hub.hf_hub_download(repo, name, revision=revision)), ""
        except LocalEntryNotFoundError:  # offline, or the hub unreachable, and not cached
            return None, "the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and the cache lacks them"
        except EntryNotFoundError:  # the repo has the other file name
            continue
        except OSError as exc:  # HTTP errors (gated, missing repo), offline mode, disk
            return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None, f"{repo} has none of {', '.join(names)}"


def folder_file(folder: Path, backbone: str) -> Path | None:
    """`<backbone>.safetensors` or `<backbone>.pth` in `folder` (the first that exists)."""
    for suffix in FOLDER_SUFFIXES:
        if (path := folder / f"{backbone}{suffix}").is_file():
            return path
    return None


def _from_folder(folder: Path, backbones: list[str]) -> dict[str, WeightSource]:
    if not folder.is_dir():
        raise ConfigError(folder, "pretrained: not auto, none, imagenet or an existing folder of weight files")
    found = {b: folder_file(folder, b) for b in backbones}
    if missing := [b for b, path in found.items() if path is None]:
        names = ", ".join(f"{b}.safetensors" for b in missing)
        raise ConfigError(folder, f"no weights for {len(missing)} backbone(s): {names} "
                                  f"(or .pth; the state dict of timm.create_model(name, pretrained=True))")
    return {b: check_file(b, path, "folder") for b, path in found.items()}


def resolve_weights(setting: str | Path, backbones: Iterable[str]) -> dict[str, WeightSource]:
    """Each backbone's checked weight source for `setting` (auto, none, imagenet or a folder)."""
    backbones = list(dict.fromkeys(backbones))
    if unknown := [b for b in backbones if not timm.is_model(b)]:
        raise ConfigError(None, f"unknown timm backbone(s) {', '.join(unknown)}")
    if str(setting) == "none":
        return {b: WeightSource("none", note="pretrained: none") for b in backbones}
    if str(setting) not in ("auto", "imagenet"):
        return _from_folder(Path(setting), backbones)
    sources = {}
    for b in backbones:
        path, why = cached_hub_file(b), "ImageNet weights not in the Hugging Face cache"
        if path is None and str(setting) == "imagenet":
            path, why = download_hub_file(b)
        sources[b] = check_file(b, path, "imagenet") if path is not None else WeightSource("none", note=why)
    return sources


def fallback_line(setting: str | Path, sources: dict[str, WeightSource]) -> str | None:
    """One line naming the backbones that start from random weights although weights were wanted."""
    random = [b for b, s in sources.items() if s.file is None]
    if not random or str(setting) == "none":
        return None
    notes = sorted({sources[b].note or "" for b in random})
    hint = ("; --pretrained imagenet downloads them, --pretrained FOLDER reads local files"
            if str(setting) == "auto" else "")
    which = "encoders" if len(random) == len(sources) else f"encoders of {', '.join(random)}"
    return f"{which} start from random weights ({'; '.join(notes)}){hint}"
