"""A corpus of realistic model code: healthy originals and broken twins with one planted defect.

gradscope was built around textbook models (nn.Sequential stacks with activation modules). The
code people actually train looks different: activations called as functions inside `forward`,
losses summed over the batch, several networks trained in one loop, hidden state carried
across batches, weight-decay groups, warm-up and clipping. Each module here writes one such
model in the style of a well-known public example (written here, not copied) and trains it with
its own loop under `gradscope.watch`, the way a user would.

Each healthy original must raise no warning or error; each broken twin must raise the finding
its planted defect causes. `python -m tests.corpus.score` prints the false alarms and detections
of the whole corpus (the figures quoted in the project notes); `test_corpus.py` asserts them.
Everything is tiny (a few thousand parameters, tens of steps) so the corpus runs in well under a
minute on two cores.
"""
