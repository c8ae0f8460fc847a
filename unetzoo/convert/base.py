"""Building blocks of the checkpoint converters: the format record and key renaming.

A converter maps the state-dict keys of another project onto unetzoo's module layout and
infers the architecture options (``num_classes``, ``in_chans``, ...) from tensor shapes. Each
source project has one module in this package that defines its :class:`CheckpointFormat`\\ s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from unetzoo.weights.preprocessing import Preprocessing

__all__ = [
    "SCALED_ONLY",
    "CheckpointFormat",
    "ConvertedStateDict",
    "Rule",
    "io_options",
    "out_in_channels",
    "rename_keys",
    "rule",
]

#: ``image / 255`` and nothing else (``ToTensor()`` alone), as most tutorial projects feed their nets
SCALED_ONLY = Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

#: a key-renaming rule: a regular expression matched against the whole key, and a function of
#: the match that returns the new key (or ``None`` to leave the key as it is)
Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]"], "str | None"]]


def rule(pattern: str, target: Callable[[re.Match[str]], str | None] | str) -> Rule:
    """A :data:`Rule`; ``target`` may be a ``str.format`` template of the match groups."""
    fn = target if callable(target) else (lambda m, t=target: t.format(*m.groups()))
    return re.compile(pattern), fn


class ConvertedStateDict(dict):
    """A state dict in unetzoo's layout that remembers each key's name in the checkpoint.

    Attributes:
        origin: unetzoo key -> checkpoint key, used to name keys the way the user knows them
            in error messages.
        format: name of the source format (``"milesial"``, ...).
        preprocessing: the source project's input normalisation, if known (set by
            :func:`unetzoo.convert.prepare_checkpoint` from the format).
    """

    def __init__(self, items: Mapping[str, torch.Tensor], origin: Mapping[str, str], format: str) -> None:
        super().__init__(items)
        self.origin = dict(origin)
        self.format = format
        self.preprocessing: Preprocessing | None = None
        self.notes = ""  # what the format cannot tell from its weights (named when loading fails)


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[Rule], format: str) -> ConvertedStateDict:
    """Rename every key by the first rule whose pattern matches it in full.

    Keys no rule matches are kept unchanged: they cannot be in unetzoo's layout, so loading
    reports them as unexpected instead of dropping them silently.
    """
    rules = list(rules)
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, fn in rules:
            match = pattern.fullmatch(key)
            if match is not None:
                new = fn(match) or key
                break
        if new in out:
            raise ValueError(f"checkpoint keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new] = value
        origin[new] = key
    return ConvertedStateDict(out, origin, format)


def out_in_channels(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, int] | None:
    """``(out_channels, in_channels)`` of the conv weight ``key``, or ``None`` if absent."""
    weight = state_dict.get(key)
    if weight is None or weight.ndim != 4:
        return None
    return int(weight.shape[0]), int(weight.shape[1])


def io_options(state_dict: Mapping[str, torch.Tensor], stem: str, head: str = "head.weight") -> dict[str, Any]:
    """``in_chans`` from the first conv weight ``stem`` and ``num_classes`` from ``head``, where present."""
    inferred: dict[str, Any] = {}
    first, last = out_in_channels(state_dict, stem), out_in_channels(state_dict, head)
    if first is not None:
        inferred["in_chans"] = first[1]
    if last is not None:
        inferred["num_classes"] = last[0]
    return inferred


@dataclass(frozen=True)
class CheckpointFormat:
    """A family of checkpoints unetzoo can import.

    Attributes:
        name: short name, e.g. ``"milesial"``.
        description: the project and network, e.g. ``"milesial/Pytorch-UNet UNet"``.
        signature: keys that every checkpoint of this format has (detection needs all of them).
        model: the registry name these checkpoints load into; ``None`` for unetzoo's own layout,
            which fits the model it was saved from.
        convert: maps a checkpoint (already unwrapped) to unetzoo's layout and returns it with
            the options inferred from its shapes.
        notes: what cannot be inferred and must be passed as an option.
        ask: the options ``notes`` is about: read from no weight, so when the user passes none
            of them the default is used and a warning says so.
        preprocessing: the input normalisation the source project trains and predicts with
            (recorded on the model, so :func:`unetzoo.transforms_for` and ``save_pretrained``
            follow it); ``None`` where the project defines none.
    """

    name: str
    description: str
    signature: tuple[str, ...]
    model: str | None
    convert: Callable[[Mapping[str, torch.Tensor]], tuple[ConvertedStateDict, dict[str, Any]]]
    notes: str = ""
    preprocessing: Preprocessing | None = None
    ask: tuple[str, ...] = ()

    def matches(self, keys: Iterable[str]) -> bool:
        keys = set(keys)
        return all(k in keys for k in self.signature)
