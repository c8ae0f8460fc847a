"""The record of one weights search, and the single error raised when it finds nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from unetzoo.registry import WeightsSpec

__all__ = ["Search", "WeightsNotFoundError"]


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights were found nowhere; the message lists every place searched and the fixes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class Search:
    """What a lookup for ``weights`` tried, for the error message when everything fails.

    Attributes:
        model: registry name the weights are for (``"unet-resnet50"``).
        weights: the record being looked for.
        searched: one line per place tried, with what happened there.
        hints: one line per way the user can provide the weights.
    """

    model: str
    weights: WeightsSpec
    searched: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model}.{self.weights.tag}"

    def tried(self, place: str, outcome: str) -> None:
        self.searched.append(f"{place}: {outcome}")

    def hint(self, text: str) -> None:
        if text not in self.hints:
            self.hints.append(text)

    def error(self) -> WeightsNotFoundError:
        w = self.weights
        lines = [
            f"cannot find the pretrained weights {self.label} ({w.source} {w.location}"
            + (f", file {w.filename})" if w.filename else ")"),
            "Searched:",
            *(f"  - {s}" for s in self.searched),
            "To provide them:",
            *(f"  - {h}" for h in self.hints),
            "  - or build the model without weights: pretrained=False (in a training config: model.pretrained: false)",
        ]
        return WeightsNotFoundError("\n".join(lines))
