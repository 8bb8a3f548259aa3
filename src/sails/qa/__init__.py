"""Science-readiness: scores from recorded metrics, human verdicts, per-target overrides.

``scores`` turns the metrics the stages record into a score in [0, 1] with named
sub-scores; ``overrides`` reads ``overrides.toml`` and says which stages an override
affects; ``verdicts`` records what a person decided. Nothing here runs CASA.
"""
