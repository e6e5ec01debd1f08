"""What a dataset converter (`datasets/*.py`) left out, by reason, for its closing summary."""
from __future__ import annotations

import dataclasses

MAX_EXAMPLES = 5    # names shown per reason in the summary


@dataclasses.dataclass
class SkippedByReason:
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)   # reason -> every name

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)

    @property
    def num_skipped(self) -> int:
        return sum(len(names) for names in self.skipped.values())

    def skip_lines(self) -> list[str]:
        """One line per reason: its count and its first few names."""
        lines = []
        for reason, names in self.skipped.items():
            more = " ..." if len(names) > MAX_EXAMPLES else ""
            lines.append(f"  {len(names):6d} skipped ({reason}): {', '.join(names[:MAX_EXAMPLES])}{more}")
        return lines
