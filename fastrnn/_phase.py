"""The learning phase: 0 = inference (default), 1 = training, per thread / async context."""
import contextlib
import contextvars

_phase = contextvars.ContextVar("fastrnn_learning_phase", default=0)


def _check(value):
    if isinstance(value, bool):
        value = int(value)
    if value not in (0, 1):
        raise ValueError(f"learning phase must be 0 or 1, got {value!r}")
    return value


def set_learning_phase(value):
    """Set the learning phase of the current thread / context (0 inference, 1 training)."""
    _phase.set(_check(value))


def get_learning_phase():
    return _phase.get()


@contextlib.contextmanager
def learning_phase(value):
    """`with fastrnn.learning_phase(1): ...` runs the block in training mode."""
    token = _phase.set(_check(value))
    try:
        yield
    finally:
        _phase.reset(token)


def resolve_training(training):
    """A per-call `training=` argument wins over the learning phase."""
    if training is None:
        return bool(_phase.get())
    return bool(training)
