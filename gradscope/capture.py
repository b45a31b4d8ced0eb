"""Attaching and removing hooks. (Being written: see issue 2.)"""


class Watcher:  # placeholder until the recorder lands
    def __init__(self, model, optimizer=None, **options):
        raise NotImplementedError


def watch(model, optimizer=None, **options):
    raise NotImplementedError
