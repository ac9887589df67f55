"""A plain numpy LSTM/GRU forward pass (batch-vectorised, one matmul per step): the baseline
every fastrnn number is compared with. Takes fastrnn's canonical gate-named state_dict."""
import numpy as np

_GATES = {"lstm": ("input", "forget", "cell", "output"), "gru": ("update", "reset", "candidate")}


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class NumpyRNN:
    """Unidirectional single-layer forward, full-length sequences (what the timing needs)."""

    def __init__(self, cell, state_dict, reset_after=True, dtype=np.float32):
        gates = _GATES[cell]
        sd = {k: np.asarray(v, dtype) for k, v in state_dict.items()}
        self.cell, self.reset_after = cell, reset_after
        self.W = np.concatenate([sd[f"layer0.forward.{g}.kernel"] for g in gates], axis=1)
        self.U = np.concatenate([sd[f"layer0.forward.{g}.recurrent"] for g in gates], axis=1)
        H = self.U.shape[0]
        zero = np.zeros(H, dtype)
        b = [sd.get(f"layer0.forward.{g}.bias", zero) for g in gates]
        rb = [sd.get(f"layer0.forward.{g}.recurrent_bias", zero) for g in gates]
        if cell == "gru" and reset_after:
            self.b = np.concatenate([b[0] + rb[0], b[1] + rb[1], b[2]])
            self.rbn = rb[2]
        else:
            self.b = np.concatenate([bi + ri for bi, ri in zip(b, rb)])
        self.H, self.dtype = H, dtype

    def __call__(self, x):
        B, T, _ = x.shape
        H = self.H
        xp = (x.reshape(B * T, -1) @ self.W + self.b).reshape(B, T, -1)
        h = np.zeros((B, H), self.dtype)
        c = np.zeros((B, H), self.dtype)
        out = np.empty((B, T, H), self.dtype)
        for t in range(T):
            if self.cell == "lstm":
                g = xp[:, t] + h @ self.U
                i, f, o = _sigmoid(g[:, :H]), _sigmoid(g[:, H:2 * H]), _sigmoid(g[:, 3 * H:])
                c = f * c + i * np.tanh(g[:, 2 * H:3 * H])
                h = o * np.tanh(c)
            else:
                if self.reset_after:
                    rec = h @ self.U
                    z = _sigmoid(xp[:, t, :H] + rec[:, :H])
                    r = _sigmoid(xp[:, t, H:2 * H] + rec[:, H:2 * H])
                    n = np.tanh(xp[:, t, 2 * H:] + r * (rec[:, 2 * H:] + self.rbn))
                else:
                    rec = h @ self.U[:, :2 * H]
                    z = _sigmoid(xp[:, t, :H] + rec[:, :H])
                    r = _sigmoid(xp[:, t, H:2 * H] + rec[:, H:])
                    n = np.tanh(xp[:, t, 2 * H:] + (r * h) @ self.U[:, 2 * H:])
                h = z * h + (1 - z) * n
            out[:, t] = h
        return out
