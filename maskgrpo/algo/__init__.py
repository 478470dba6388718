"""The baseline's math (equations), context builders and losses; registries for the swappable parts."""

from maskgrpo.algo import trace  # noqa: F401  (registers the TraceGRPO context "trace" with CONTEXTS)
