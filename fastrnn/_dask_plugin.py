"""The Dask worker plugin of fastrnn.dask, apart so that `import fastrnn.dask` needs no Dask."""
from distributed import WorkerPlugin

from .predict import cached_model


class ModelPlugin(WorkerPlugin):
    """Holds a model on each worker: the ModelSource travels once per worker (also to workers
    that join or restart later, which the scheduler hands every registered plugin), and the
    model is loaded there once."""

    def __init__(self, source, threads=1):
        self.source, self.threads = source, threads
        self.model = None

    def setup(self, worker):
        from . import set_num_threads
        set_num_threads(self.threads)
        self.model = cached_model(self.source)
