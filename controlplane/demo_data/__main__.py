"""``python -m controlplane.demo_data [DIR]``: regenerate the shipped demo files."""

from __future__ import annotations

import sys
from pathlib import Path

from controlplane.demo_data import demo_data, generate


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else demo_data().train.parent
    data = generate(target)
    for path in (data.train, data.eval, data.rubric):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
