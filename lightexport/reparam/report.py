"""What a pass did, as data: printed by the CLI, stored in JSON reports and artifact metadata."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassReport:
    name: str
    changed: list[str] = field(default_factory=list)  # qualified module names ("a+b" for a fused pair)
    details: dict[str, int | str] = field(default_factory=dict)
    #: candidates the pass looked at and left alone: (module name, why)
    left: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.changed)

    def skip(self, reason: str, module: str | None = None) -> None:
        """Count a candidate left alone, by reason, and name it: a fold that did not happen should be explainable."""
        key = f"skipped_{reason}"
        self.details[key] = int(self.details.get(key, 0)) + 1
        if module is not None:
            self.left.append((module, reason))

    def summary(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return f"{self.name}: {self.count} changed" + (f" ({extra})" if extra else "")

    def to_dict(self) -> dict:
        return {"name": self.name, "count": self.count, "changed": list(self.changed), "details": dict(self.details),
                "left": [{"module": m, "reason": r} for m, r in self.left]}
