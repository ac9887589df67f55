"""Train a small LSTM or GRU on the adding problem with fastrnn's gradients and a numpy Adam.

The adding problem (Hochreiter & Schmidhuber 1997): each sequence step carries a random value in
[0, 1) and a marker; exactly two steps are marked, and the target is the sum of their values.
Sequences have random lengths (padding on the right, passed as `lengths`), so the model must
carry information across a variable number of steps and the masking must be right: the
prediction is read from the final state, which for each row is the state after its last valid
step. Predicting the mean (1.0) scores an MSE of 1/6, the trivial baseline.

    python examples/train_adding.py --cell lstm --steps 1500
"""
import argparse

import numpy as np

import fastrnn


def adding_batch(rng, batch, max_len, min_len):
    lengths = rng.integers(min_len, max_len + 1, size=batch)
    x = np.zeros((batch, max_len, 2), np.float32)
    y = np.zeros(batch, np.float32)
    for b, n in enumerate(lengths):
        x[b, :n, 0] = rng.random(n)
        i, j = rng.choice(n, size=2, replace=False)
        x[b, [i, j], 1] = 1.0
        y[b] = x[b, i, 0] + x[b, j, 0]
    return x, lengths, y


class Adam:
    """Plain Adam over a dict of numpy arrays (Kingma & Ba 2015)."""

    def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, betas[0], betas[1], eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def train(cell="lstm", steps=1500, hidden=32, batch=64, max_len=20, min_len=10, lr=1e-2,
          seed=0, log_every=0, return_model=False):
    """Returns the list of per-step training losses; with return_model, (losses, rnn, head):
    the trained layer and the linear head {"weight": (hidden,), "bias": (1,)} on its final
    h."""
    rng = np.random.default_rng(seed)
    cls = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    rnn = cls(2, hidden, seed=seed)
    params = rnn.state_dict()
    params["head.weight"] = (rng.normal(size=hidden) / np.sqrt(hidden)).astype(np.float32)
    params["head.bias"] = np.ones(1, np.float32)
    opt = Adam(params, lr=lr)
    losses = []
    for it in range(steps):
        x, lengths, y = adding_batch(rng, batch, max_len, min_len)
        rnn.load_state_dict({k: v for k, v in params.items() if not k.startswith("head.")})
        out, state = rnn(x, lengths=lengths, training=True)
        h = (state[0] if cell == "lstm" else state)[-1]         # (batch, hidden)
        pred = h @ params["head.weight"] + params["head.bias"][0]
        err = pred - y
        losses.append(float(np.mean(err ** 2)))
        dpred = 2 * err / batch
        grads = {"head.weight": h.T @ dpred, "head.bias": np.array([dpred.sum()], np.float32)}
        dh = np.zeros((1, batch, hidden), np.float32)
        dh[0] = np.outer(dpred, params["head.weight"])
        grad_state = (dh, np.zeros_like(dh)) if cell == "lstm" else dh
        rnn.backward(np.zeros_like(out), grad_state)
        grads.update(rnn.grads)
        opt.step(params, grads)
        if log_every and (it + 1) % log_every == 0:
            print(f"step {it + 1:5d}  mse {np.mean(losses[-log_every:]):.4f}  "
                  f"(baseline {1 / 6:.4f})")
    if return_model:
        rnn.load_state_dict({k: v for k, v in params.items() if not k.startswith("head.")})
        return losses, rnn, {"weight": params["head.weight"], "bias": params["head.bias"]}
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train(args.cell, args.steps, args.hidden, seed=args.seed, log_every=100)


if __name__ == "__main__":
    main()
