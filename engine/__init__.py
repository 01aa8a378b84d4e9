"""carescore engine: canonical events, KPI definitions, operators, windows, runtimes."""

from engine.native import install as _install_native

_install_native()  # the compiled engine modules, if built for these sources (engine/native.py)
