"""Depth sweeps: train the same MLP at several depths, activations, norms and dropout rates,
and measure how the backprop signal decays layer by layer. (Being written: see issue 6.)"""


def sweep(*args, **kwargs):  # placeholder until the runner lands
    raise NotImplementedError("gradscope.sweep is not implemented yet")
