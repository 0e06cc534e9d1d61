"""Follow a gradient run as a reader would: the files its functions live in, in the order they are first called.

Usage: python tools/reading_path.py MODEL FROM:TO [-v]

Every gradinspect function is counted once, at its first call (comprehensions belong to their
function); consecutive functions of one file form one stay. Printed: the number of functions,
stays and files, and each file entered more than twice (issue 20 asks for none). ``-v`` lists
the stays. Runs in-process on seeded random inputs (``--random 2``).
"""

from __future__ import annotations

import collections
import os
import sys
from typing import Any


def main(argv: list[str]) -> None:
    os.environ["GRADINSPECT_IN_PROCESS"] = "1"
    import gradinspect
    from gradinspect.commands.grad import inspect_gradients

    root = os.path.dirname(gradinspect.__file__) + "/"
    seen: set[tuple[str, str, int]] = set()
    order: list[tuple[str, str]] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(root) or code.co_name.startswith("<"):
            return
        key = (code.co_filename[len(root) :], code.co_name, code.co_firstlineno)
        if key not in seen:
            seen.add(key)
            order.append(key[:2])

    source, pair = argv[0], tuple(argv[1].split(":"))
    sys.setprofile(profile)
    try:
        inspect_gradients(source, None, [pair], random=2)
    finally:
        sys.setprofile(None)
    stays: list[tuple[str, list[str]]] = []
    for file, name in order:
        if stays and stays[-1][0] == file:
            stays[-1][1].append(name)
        else:
            stays.append((file, [name]))
    entered = collections.Counter(file for file, _ in stays)
    print(f"{len(order)} functions, {len(stays)} stays in {len(entered)} files")
    print("entered more than twice:", {f: n for f, n in entered.most_common() if n > 2} or "none")
    if "-v" in argv:
        for file, names in stays:
            print(f"  {file}: {', '.join(names)}")


if __name__ == "__main__":
    main(sys.argv[1:])
