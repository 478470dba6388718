"""The baseline's math (equations), context builders and losses; registries for the swappable parts."""
