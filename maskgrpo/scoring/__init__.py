"""Scoring: detector-agnostic GenEval rules and partial-credit reward (``geneval_rules``), shared by real GenEval
and the ShapesWorld evaluator."""
