"""Search-space files (YAML) -> Optuna suggestions -> `Arch`.

A space lists parameters in sampling order. Each has either `choices` (categorical) or `low`/`high`
(int or float, optional `step`, `log`). `per_stage: true` samples one value per decoder stage
(`name_0`, `name_1`, ...; `skips` stops one stage early, the last stage has no encoder skip), and
`stage_choices` gives each stage its own list. `when: {param: value-or-list}` makes a parameter exist
only when an earlier one has one of those values (for a per-stage parameter: when any stage has).
Parameters that are not `Arch` fields (for example `distill_lambda`) are training settings of the
trial and are read from `trial.params`.

`max_mmacs` (top level, optional) caps a candidate's compute: one whose network needs more million
multiply-accumulates per frame at deployment resolution is pruned before training, in a fraction of a
second (its size is computed on PyTorch's meta device). It keeps a search away from networks the
device cannot run fast enough to compete, without taking the hand-designed presets out of the space:
presets enqueued by name are trained whatever their size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  check_distribution_compatibility)

from nas.arch import Arch, ArchError
from nas.config import read_yaml
from nas.errors import ConfigError

PER_STAGE_FIELDS = ("decoder_channels", "skips", "blocks")
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(Arch))
TRAINING_PARAMS = ("distill_lambda",)  # read by the objective; the learning rate is the budget's
MAX_STAGES = 5  # decoder stages at the deepest encoder (depth 5)
PARAM_KEYS = {"choices", "low", "high", "step", "log", "per_stage", "stage_choices", "when"}
SCALARS = (str, int, float, bool, type(None))  # what one Optuna categorical choice can be


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    name: str
    choices: tuple | None = None
    stage_choices: tuple[tuple, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    per_stage: bool = False
    when: dict[str, tuple] | None = None

    def distribution(self, stage: int | None = None) -> BaseDistribution:
        """What Optuna samples this parameter (of one decoder stage) from."""
        choices = self.stage_choices[stage] if self.stage_choices and stage is not None else self.choices
        if choices is not None:
            return CategoricalDistribution(list(choices))
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return IntDistribution(self.low, self.high, log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def suggest(self, trial: optuna.Trial, name: str, stage: int | None = None) -> Any:
        dist = self.distribution(stage)
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(name, list(dist.choices))
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)

    def allows(self, value: Any, stage: int | None = None) -> bool:
        choices = self.stage_choices[stage] if self.stage_choices and stage is not None else self.choices
        if choices is not None:
            return value in choices
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SearchSpace:
    name: str
    params: tuple[Param, ...]
    path: Path | None = None
    max_mmacs: float | None = None  # compute cap per frame at deployment resolution; None: no cap

    def _active(self, param: Param, values: dict[str, Any]) -> bool:
        for other, allowed in (param.when or {}).items():
            current = values.get(other)
            current = current if isinstance(current, (list, tuple)) else [current]
            if not any(v in allowed for v in current):
                return False
        return True

    def sample(self, trial: optuna.Trial) -> tuple[Arch, dict[str, Any]]:
        """Suggest every active parameter; (Arch, training params). ArchError if it cannot be built."""
        values: dict[str, Any] = {}
        for p in self.params:
            if not self._active(p, values):
                continue
            if p.per_stage:
                depth = int(values.get("depth", Arch.depth))
                stages = depth - 1 if p.name == "skips" else depth
                staged = [p.suggest(trial, f"{p.name}_{i}", i) for i in range(stages)]
                values[p.name] = staged + (["none"] if p.name == "skips" else [])
            else:
                values[p.name] = p.suggest(trial, p.name)
        depth = int(values.get("depth", Arch.depth))
        arch_values = {**Arch.stage_defaults(depth), **{k: v for k, v in values.items() if k in ARCH_FIELDS}}
        training = {k: v for k, v in values.items() if k not in ARCH_FIELDS}
        return Arch(**arch_values), training

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every Optuna parameter name this space can suggest (`name_i` per decoder stage), with its distribution."""
        out: dict[str, BaseDistribution] = {}
        for p in self.params:
            if p.per_stage:
                out.update({f"{p.name}_{i}": p.distribution(i) for i in range(MAX_STAGES)})
            else:
                out[p.name] = p.distribution()
        return out

    def conflicts(self, trials: list[optuna.trial.FrozenTrial]) -> list[str]:
        """Parameters a study's trials sampled from choices this space has changed (newest trial first).

        Optuna refuses to sample a parameter from other choices than earlier trials of the same study did
        (a changed numeric range is allowed): resuming such a study would fail every trial.
        """
        ours, seen, problems = self.distributions(), set(), []
        for trial in reversed(trials):
            for name, theirs in trial.distributions.items():
                if name in seen or name not in ours:
                    continue
                seen.add(name)
                try:
                    check_distribution_compatibility(theirs, ours[name])
                except ValueError:
                    problems.append(f"{name}: {_described(theirs)} in the study, {_described(ours[name])} now")
        return problems

    def backbones(self) -> tuple[str, ...]:
        """Every backbone a trial of this space can have: what pretrained weights are resolved for."""
        param = next((p for p in self.params if p.name == "backbone"), None)
        return tuple(param.choices) if param is not None and param.choices else (Arch.backbone,)

    def precisions(self) -> tuple[str, ...]:
        """Every precision a trial of this space can be deployed in (fp32 when the space fixes none)."""
        param = next((p for p in self.params if p.name == "precision"), None)
        return tuple(param.choices) if param is not None and param.choices else ("fp32",)

    def violations(self, arch: Arch) -> list[str]:
        """Why `arch` is not a point of this space (empty when it is)."""
        values = arch.to_dict()
        problems = []
        for p in self.params:
            if p.name not in ARCH_FIELDS or not self._active(p, values):
                continue
            if p.per_stage:
                staged = values[p.name][:-1] if p.name == "skips" else values[p.name]
                problems += [f"{p.name}[{i}] = {v!r} is not allowed" for i, v in enumerate(staged)
                             if not p.allows(v, i)]
            elif not p.allows(values[p.name]):
                problems.append(f"{p.name} = {values[p.name]!r} is not allowed")
        defaults = {**Arch().to_dict(), **Arch.stage_defaults(arch.depth)}
        fixed = {f: defaults[f] for f in ARCH_FIELDS if f not in {p.name for p in self.params}}
        problems += [f"{k} = {values[k]!r} but the space fixes it to {v!r}" for k, v in fixed.items()
                     if values[k] != (list(v) if isinstance(v, tuple) else v)]
        return problems


def _described(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "choices [" + ", ".join(map(str, dist.choices)) + "]"
    return f"a {type(dist).__name__.removesuffix('Distribution').lower()} range {dist.low}..{dist.high}"


def _parse_param(path: Path, name: str, spec: Any, earlier: set[str]) -> Param:
    def bad(message: str) -> ConfigError:
        return ConfigError(path, f"parameter {name!r}: {message}")

    if name not in ARCH_FIELDS and name not in TRAINING_PARAMS:
        raise bad(f"unknown parameter; arch fields are {', '.join(ARCH_FIELDS)}, training parameters "
                  f"{', '.join(TRAINING_PARAMS)}")
    if not isinstance(spec, dict):
        raise bad("expected a mapping with 'choices' or 'low'/'high'")
    if unknown := set(spec) - PARAM_KEYS:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}")
    for flag in ("per_stage", "log"):
        if flag in spec and not isinstance(spec[flag], bool):
            raise bad(f"{flag} must be true or false, got {spec[flag]!r}")
    per_stage = bool(spec.get("per_stage", False))
    if per_stage != (name in PER_STAGE_FIELDS):
        raise bad("per_stage must be true exactly for " + ", ".join(PER_STAGE_FIELDS))
    choices = spec.get("choices")
    stage_choices = spec.get("stage_choices")
    if stage_choices is not None:
        if not (isinstance(stage_choices, list) and len(stage_choices) == MAX_STAGES
                and all(isinstance(c, list) and c for c in stage_choices)):
            raise bad(f"stage_choices must be a list of {MAX_STAGES} non-empty lists (one per possible stage)")
        stage_choices = tuple(tuple(c) for c in stage_choices)
    if choices is not None and (not isinstance(choices, list) or not choices):
        raise bad("choices must be a non-empty list")
    for value in [*(choices or ()), *(c for stage in (stage_choices or ()) for c in stage)]:
        if not isinstance(value, SCALARS):
            kind = "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else "not a value"
            raise bad(f"choice {value!r} is {kind}; each choice is one value (a name or a number)"
                      + ("; one list per decoder stage goes under stage_choices" if name in PER_STAGE_FIELDS else ""))
    has_range = "low" in spec or "high" in spec
    if (choices is not None or stage_choices is not None) == has_range:
        raise bad("give either choices (or stage_choices) or low/high")
    if has_range and not all(_is_number(spec.get(k)) and math.isfinite(spec[k]) for k in ("low", "high")):
        raise bad(f"low and high must both be finite numbers, got {spec.get('low')!r} and {spec.get('high')!r}")
    if "step" in spec and not (_is_number(spec["step"]) and math.isfinite(spec["step"]) and spec["step"] > 0):
        raise bad(f"step must be a finite number above 0, got {spec['step']!r}")
    if has_range and spec["low"] > spec["high"]:
        raise bad("low is above high")
    when = spec.get("when")
    if when is not None:
        if not isinstance(when, dict) or not when:
            raise bad("when must map earlier parameter names to a value or a list of values")
        if missing := set(when) - earlier:
            raise bad(f"when refers to {', '.join(sorted(missing))}, not an earlier parameter")
        when = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in when.items()}
    return Param(name=name, choices=tuple(choices) if choices is not None else None, stage_choices=stage_choices,
                 low=spec.get("low"), high=spec.get("high"), step=spec.get("step"), log=bool(spec.get("log", False)),
                 per_stage=per_stage, when=when)


def _check_values(path: Path, param: Param) -> None:
    """Reject choices no Arch can hold (unknown backbone, skip type, ...), naming the file."""
    import timm

    options = list(param.choices or ()) + [c for stage in (param.stage_choices or ()) for c in stage]
    if param.name in ARCH_FIELDS and param.low is not None:  # a range: both ends must be valid values
        if param.name not in ("depth", "decoder_channels", "max_depth"):
            raise ConfigError(path, f"parameter {param.name!r}: a range (low/high) only fits numeric arch fields "
                                    "(depth, decoder_channels, max_depth); give choices")
        if param.name != "max_depth" and not all(isinstance(v, int) for v in (param.low, param.high)):
            raise ConfigError(path, f"parameter {param.name!r}: low and high must be integers")
        options += [param.low, param.high]
    if param.name == "backbone":
        known = set(timm.list_models())
        if unknown := [b for b in options if b not in known]:
            raise ConfigError(path, f"parameter 'backbone': unknown timm backbone(s) {', '.join(map(str, unknown))}")
        return
    if param.name == "depth":
        if bad := [d for d in options if d not in (3, 4, 5)]:
            raise ConfigError(path, f"parameter 'depth': choices must be 3, 4 or 5, got {bad}")
        return
    if param.name == "distill_lambda":  # the weight of the distillation loss
        if bad := [v for v in options + [param.low, param.high]
                   if v is not None and not (_is_number(v) and math.isfinite(v) and v >= 0)]:
            raise ConfigError(path, f"parameter 'distill_lambda': the distillation weight must be a finite number "
                                    f"of 0 or more, got {bad[0]!r}")
        return
    if param.name not in ARCH_FIELDS:
        return
    for value in options:
        probe = Arch().to_dict()
        if param.per_stage:
            probe[param.name][0] = value
        else:
            probe[param.name] = value
        try:
            Arch.from_dict(probe)
        except (ArchError, TypeError, ValueError) as exc:
            raise ConfigError(path, f"parameter {param.name!r}: choice {value!r} is invalid ({exc})") from None


def load_space(path: Path) -> SearchSpace:
    """Read and validate a search-space file; ConfigError names the file and the problem."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise ConfigError(path, "expected a mapping with a non-empty 'params' mapping")
    if unknown := set(data) - {"name", "description", "params", "max_mmacs"}:
        raise ConfigError(path, f"unknown top-level key(s) {', '.join(sorted(unknown))}")
    max_mmacs = data.get("max_mmacs")
    if max_mmacs is not None and (isinstance(max_mmacs, bool) or not isinstance(max_mmacs, (int, float))
                                  or max_mmacs <= 0):
        raise ConfigError(path, f"max_mmacs must be a positive number (million MACs per frame), got {max_mmacs!r}")
    params: list[Param] = []
    for name, spec in data["params"].items():
        param = _parse_param(path, str(name), spec, {p.name for p in params})
        _check_values(path, param)
        params.append(param)
    return SearchSpace(name=str(data.get("name", path.stem)), params=tuple(params), path=path,
                       max_mmacs=None if max_mmacs is None else float(max_mmacs))
