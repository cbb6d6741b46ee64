"""Building Pythia instances: the one place that turns config settings into ``readString`` calls."""

from __future__ import annotations

import contextlib
import os


class PythiaError(RuntimeError):
    pass


@contextlib.contextmanager
def _quiet_stdout():
    """Pythia prints its banner with C++ stdout; keep job logs readable."""
    fd = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def make_pythia(settings: list[str], seed: int, hooks_factory=None):
    """An initialised ``pythia8mc.Pythia`` with ``settings`` (Pythia strings) and ``Random:seed = seed``.

    ``hooks_factory(pythia)`` may build a ``pythia8mc.UserHooks`` to install before init; then
    ``(pythia, hooks)`` is returned (the caller must keep ``hooks`` alive as long as ``pythia``).
    """
    import pythia8mc

    with _quiet_stdout():
        pythia = pythia8mc.Pythia("", False)
    base = ["Print:quiet = on", "Next:numberCount = 0", "Random:setSeed = on", f"Random:seed = {int(seed)}"]
    for s in base + list(settings):
        if not pythia.readString(s):
            raise PythiaError(f"Pythia rejected the setting '{s}'")
    hooks = None
    if hooks_factory is not None:
        hooks = hooks_factory(pythia)
        pythia.setUserHooksPtr(hooks)
    with _quiet_stdout():
        ok = pythia.init()
    if not ok:
        raise PythiaError(f"Pythia initialisation failed with settings {list(settings)}")
    return (pythia, hooks) if hooks_factory is not None else pythia


def process_settings(cfg: dict, process: str) -> list[str]:
    """Settings of a named process (hard process + common settings), without the beam/LHE part."""
    if process not in cfg["processes"]:
        raise ValueError(f"unknown process '{process}'; known: {', '.join(cfg['processes'])}")
    proc = cfg["processes"][process]
    return list(proc["settings"]) + [f"PhaseSpace:pTHatMin = {proc['pt_hat_min']}"] + list(cfg["simulation"]["pythia_settings"])
