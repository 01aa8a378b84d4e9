"""libFuzzer (atheris) over one target of tests/fuzz/targets.py, coverage-guided.

    python -m tests.fuzz.atheris_main TARGET [libFuzzer flags, e.g. -max_total_time=60 CORPUS_DIR]

Any exception other than the ones a target declares is a crash: libFuzzer stops, writes
the input to the artifact prefix and exits non-zero.
"""

from __future__ import annotations

import sys

import atheris

from tests.fuzz.targets import TARGETS

atheris.instrument_all()  # coverage feedback from every loaded module (ours included; run.py
# sets CARESCORE_PURE_PYTHON so the HL7 parser is Python bytecode it can instrument)


def main() -> None:
    name = sys.argv[1]
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
