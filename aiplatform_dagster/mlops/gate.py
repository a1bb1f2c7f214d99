"""The validation gate: a candidate replaces what serves only if it wins on the dev split."""

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    """Both scores, the margin the candidate had to beat, and the outcome, in words."""

    metric: str
    candidate: float
    baseline: float
    baseline_name: str
    margin: float

    @property
    def promoted(self) -> bool:
        return self.candidate > self.baseline + self.margin

    @property
    def reason(self) -> str:
        verdict = "promoted" if self.promoted else "refused"
        relation = ">" if self.promoted else "<="
        return (
            f"{verdict}: dev {self.metric} {self.candidate:.4f} {relation} "
            f"{self.baseline_name} {self.baseline:.4f} + margin {self.margin:.4f}"
        )
