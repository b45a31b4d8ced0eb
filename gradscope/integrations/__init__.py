"""Bridges into the trainers people actually use: each translates a framework's events into a watch.

    from gradscope.integrations.lightning import GradscopeCallback      # pip install "torch-gradscope[lightning]"
    from gradscope.integrations.transformers import GradscopeCallback   # pip install "torch-gradscope[transformers]"

Importing this package imports neither framework; each submodule imports its own.
"""
