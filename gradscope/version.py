"""gradscope's version, in a module of its own: the recorder stamps it into every record, and
importing it from the package's `__init__` (which imports the recorder) would be a circle."""

__version__ = "0.1.0"
