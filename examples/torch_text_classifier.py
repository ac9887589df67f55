"""A PyTorch text classifier (Embedding + packed bidirectional LSTM + Linear) trained twice: once
with its nn.LSTM swapped for fastrnn.torch.LSTM by `fastrnn.torch.accelerate`, once as it is.

The synthetic task: each sequence holds noise tokens and one marker token (1, 2 or 3) at a
random position; the class is the marker. Sequences have random lengths and go through the
LSTM as a PackedSequence. Both runs start from the same seed (same initial weights) and see the
same batches, so their loss curves agree; the wall times show the speed-up.

Training amplifies rounding differences: in float32 the two curves agree to 1e-7 for the
first ~30 steps, then a difference of one rounding grows by orders of magnitude while the loss
falls steeply, and they drift apart by up to ~0.1 before both converge (with a larger learning
rate, Adam does the same in float64 once the loss is near zero). The defaults are therefore
float64 and lr=1e-3, where the curves agree to ~1e-8 over 300 steps; `--dtype float32` shows
the float32 speeds.

    python examples/torch_text_classifier.py --steps 300
    python examples/torch_text_classifier.py --dtype float32 --threads 2
"""
import argparse
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
import fastrnn.torch

VOCAB, CLASSES = 24, 3


class Classifier(nn.Module):
    def __init__(self, embed=32, hidden=64):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, embed, padding_idx=0)
        self.encoder = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, CLASSES)

    def forward(self, ids, lengths):
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.encoder(packed)
        return self.head(torch.cat([h_n[0], h_n[1]], dim=1))  # both directions' final states


def make_batches(steps, batch, max_len, seed):
    """The same list of (ids, lengths, labels) batches for both runs."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        lengths = torch.randint(max_len // 3, max_len + 1, (batch,), generator=gen)
        ids = torch.randint(4, VOCAB, (batch, max_len), generator=gen)
        ids[torch.arange(max_len)[None, :] >= lengths[:, None]] = 0  # padding
        labels = torch.randint(0, CLASSES, (batch,), generator=gen)
        where = (torch.rand(batch, generator=gen) * lengths).long()
        ids[torch.arange(batch), where] = labels + 1
        out.append((ids, lengths, labels))
    return out


def train(batches, accelerate, seed=0, lr=1e-3, dtype=torch.float64):
    """Per-step losses and the wall time of the training loop."""
    torch.manual_seed(seed)
    model = Classifier().to(dtype)
    if accelerate:
        swapped = fastrnn.torch.accelerate(model)
        assert swapped == ["encoder"], swapped
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    start = time.perf_counter()
    for ids, lengths, labels in batches:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(ids, lengths), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=30)
    # One thread by default: on a busy machine, OpenMP threads waiting for each other make
    # both runs erratic (minutes instead of seconds), which hides the comparison.
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both torch and fastrnn (0: torch's default)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fastrnn.set_num_threads(torch.get_num_threads())  # the same budget for both runs
    batches = make_batches(args.steps, args.batch, args.max_len, args.seed)
    dtype = getattr(torch, args.dtype)
    fast_losses, fast_time = train(batches, accelerate=True, seed=args.seed, dtype=dtype)
    stock_losses, stock_time = train(batches, accelerate=False, seed=args.seed, dtype=dtype)
    diff = max(abs(a - b) for a, b in zip(fast_losses, stock_losses))
    tail = max(1, len(fast_losses) // 10)
    print(f"{args.steps} steps, batch {args.batch}, max length {args.max_len}, "
          f"{torch.get_num_threads()} thread(s), {args.dtype}")
    print(f"loss: first {fast_losses[0]:.4f}, mean of the last {tail} steps "
          f"{sum(fast_losses[-tail:]) / tail:.4f} (fastrnn.torch) / "
          f"{sum(stock_losses[-tail:]) / tail:.4f} (nn.LSTM)")
    print(f"max difference between the loss curves: {diff:.2e}")
    print(f"wall time: fastrnn.torch {fast_time:.2f} s, nn.LSTM {stock_time:.2f} s "
          f"({stock_time / fast_time:.2f}x)")
    return fast_losses, stock_losses


if __name__ == "__main__":
    main()
