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
    """Set the learning phase of the current thread / async context: 0 inference (the
    default), 1 training. Layer calls with `training=None` use it; other threads and contexts
    keep their own.

    Args:
        value: 0 or 1 (or a bool).

    Raises:
        ValueError: any other value.

    Example:
        >>> fastrnn.set_learning_phase(1); fastrnn.get_learning_phase()
        1
    """
    _phase.set(_check(value))


def get_learning_phase():
    """The learning phase of the current thread / async context.

    Returns:
        int: 0 (inference, the default) or 1 (training).

    Example:
        >>> fastrnn.get_learning_phase()
        0
    """
    return _phase.get()


@contextlib.contextmanager
def learning_phase(value):
    """Context manager: the learning phase `value` for the block, the previous one after it
    (also when the block raises). Per thread / async context, like `set_learning_phase`.

    Args:
        value: 0 (inference) or 1 (training).

    Raises:
        ValueError: any other value.

    Example:
        >>> with fastrnn.learning_phase(1):
        ...     out, state = lstm(x)          # a training call: lstm.backward() may follow
    """
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
