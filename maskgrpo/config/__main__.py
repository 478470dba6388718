"""``python -m maskgrpo.config [SECTION]``: print every config key with its type, default and docstring."""

import sys

from maskgrpo.config import describe, schema


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "ToyPretrainRun"
    cls = getattr(schema, name, None)
    if cls is None:
        sys.exit(f"unknown section {name!r}; valid: {[n for n in dir(schema) if n[0].isupper()]}")
    print("\n".join(describe(cls)))


if __name__ == "__main__":
    main()
