"""``python -m maskgrpo.config [SECTION]``: print every config key with its type, default and docstring."""

import argparse
import dataclasses

from maskgrpo.config import describe, schema


def main(argv: list[str] | None = None) -> None:
    sections = [n for n in dir(schema) if dataclasses.is_dataclass(getattr(schema, n))]
    ap = argparse.ArgumentParser(prog="python -m maskgrpo.config", description=__doc__)
    ap.add_argument("section", nargs="?", default="ToyPretrainRun",
                    help="a config dataclass, e.g. TrainRun (an RL run) or ToyPretrainRun (the default)")  # fmt: skip
    args = ap.parse_args(argv)
    cls = getattr(schema, args.section, None)
    if cls is None:
        ap.exit(2, f"error: unknown section {args.section!r}; valid: {sections}\n")
    print("\n".join(describe(cls)))


if __name__ == "__main__":
    main()
