"""The Report that evaluate() returns: victim accuracies with what is needed to read and reproduce them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# what each protocol's rows mean, for the Markdown header
PROTOCOLS = {
    "scratch": "each victim trains from scratch on its training set",
    "finetune": "a victim pre-trains on the clean (1 - r) rows, then fine-tunes on the other r rows: once on their "
                "protected twins, once on the same rows clean",
}


@dataclass
class Report:
    """Victim accuracies with everything needed to read and reproduce them."""

    rows: list[dict]
    victim: dict
    seed: int
    sizes: dict
    environment: dict
    seconds: float = 0.0
    resolution: list[int] | None = None    # the working size victims trained and were tested at (h, w)
    warnings: list[str] = field(default_factory=list)
    protocol: str = "scratch"               # "scratch" or "finetune" (PROTOCOLS)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from ._artefacts import write_text_atomic

            write_text_atomic(path, text)   # whole or not at all
        return text

    def accuracy(self, train_set: str, ratio: float | None = None, defence: str = "none") -> float:
        """The test accuracy of one run, e.g. report.accuracy("mix", 0.5)."""
        for r in self.rows:
            if r["train_set"] == train_set and r["defence"] == defence and (ratio is None or
                                                                            abs(r["ratio"] - ratio) < 1e-9):
                return r["test_accuracy"]
        raise KeyError(f"no run {train_set!r} r={ratio} defence={defence!r} in this report")

    def to_markdown(self) -> str:
        t = self.victim["train"]
        finetune = self.protocol == "finetune"
        ft = (f"; fine-tuned {self.victim.get('finetune_epochs')} epochs from lr {self.victim.get('finetune_lr')} "
              "(cosine)") if finetune else ""
        lines = [
            f"Protocol: {self.protocol} ({PROTOCOLS.get(self.protocol, '')}).",
            "",
            f"Victim: {self.victim['arch']}, {t['epochs']} epochs, batch {t['batch_size']}, "
            f"{'crop+flip' if t['augment'] else 'no augmentation'}{ft}; seed {self.seed}; "
            f"{self.sizes['train']} train / {self.sizes['test']} test images"
            + (f" at {self.resolution[0]}x{self.resolution[1]}" if self.resolution else "")
            + f"; device {self.environment['device']}.",
            "",
            *[f"**Warning:** {w}" for w in self.warnings],
            *([""] if self.warnings else []),
            f"| defence | training set | protected share r | train images | test accuracy | "
            f"{'vs pre-trained victim' if finetune else 'vs clean-only control'} |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            gap = r.get("minus_control")
            lines.append(
                f"| {r['defence']} | {r['train_set']} | {r['ratio']:.2f} | {r['n_train']} | "
                f"{100 * r['test_accuracy']:.2f} % | {'' if gap is None else f'{100 * gap:+.2f} pts'} |")
        return "\n".join(lines)
