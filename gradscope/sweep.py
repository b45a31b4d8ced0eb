"""Depth sweeps. (Being written: see issue 6.)"""


def sweep(*args, **kwargs):  # placeholder until the sweep lands
    raise NotImplementedError("gradscope.sweep is not implemented yet")
