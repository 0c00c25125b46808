"""Weight averaging: an exponential moving average (EMA) of the network's weights over the steps.

With ``ema_momentum`` m > 0 the optimizer keeps, after every step t, ``average = m * average +
(1 - m) * weights`` (the first step copies the weights; Keras's ``use_ema``), about the last
``1 / (1 - m)`` steps. Validation, the best checkpoint and the written model use the average;
training and the last checkpoint (resume) keep the raw weights, so averaging never changes the
path training takes.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def averaged_weights(optimizer):
    """Inside the block the trained variables hold ``optimizer``'s moving averages, and the
    averages the weights; both are swapped back exactly (value copies) on leaving. A no-op for an
    optimizer without averaging (in mixed precision the averages are the inner optimizer's)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # inside a LossScaleOptimizer
    if not getattr(inner, "use_ema", False):
        yield
        return
    # Keras keeps the averages in step with the optimizer's variables (the pairing its own
    # SwapEMAWeights callback uses); that callback swaps by adding and subtracting, which rounds.
    pairs = list(zip(inner._trainable_variables, inner._model_variables_moving_average))

    def swap():
        for variable, average in pairs:
            value = variable.numpy()
            variable.assign(average.numpy())
            average.assign(value)

    swap()
    try:
        yield
    finally:
        swap()
