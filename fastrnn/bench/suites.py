"""The benchmark grids. A case is one computation timed on every implementation."""
from dataclasses import asdict, dataclass

KINDS = ("forward", "step", "masked", "training")


@dataclass(frozen=True)
class Case:
    suite: str
    kind: str          # forward | step (streaming, one call per step) | masked | training
    cell: str          # lstm | gru
    B: int
    T: int             # sequence length; for "step" the number of steps per timed call
    I: int
    H: int
    reset_after: bool = True
    quick: bool = False  # part of the quick subset
    note: str = ""
    variant: tuple = ()  # cell-variant keywords as (name, value) pairs (docs/variants.md)

    @property
    def kwargs(self):
        """The cell-variant keywords of the layer."""
        return dict(self.variant)

    @property
    def P(self):
        """Units of h: proj_size, or H."""
        return self.kwargs.get("proj_size", 0) or self.H

    @property
    def label(self):
        cell = "" if self.cell == "lstm" or self.reset_after else "(rb)"
        extra = "".join(f" {k}={v}" if not isinstance(v, bool) else f" {k}"
                        for k, v in self.variant)
        return (f"{self.cell}{cell} {self.kind} B={self.B} T={self.T} I={self.I} "
                f"H={self.H}{extra}")

    def as_dict(self):
        return asdict(self)


def _embedded():
    quick = {("lstm", "forward", 64, 64), ("gru", "forward", 1, 32),
             ("lstm", "step", 64, 64), ("gru", "step", 1, 16)}
    cases = []
    # H=8 as well: the streaming latency targets start there.
    for kind, T in (("forward", 100), ("step", 50)):
        for cell in ("lstm", "gru"):
            for H in (8, 16, 32, 64, 128, 256):
                for I in (1, H):
                    cases.append(Case("embedded", kind, cell, 1, T, I, H,
                                      quick=(cell, kind, I, H) in quick))
        for H in (16, 64, 256):   # the reset-before GRU variant (Keras reset_after=False, TF1)
            cases.append(Case("embedded", kind, "gru", 1, T, H, H, reset_after=False))
    return cases


def _server():
    # DeepBench inference (LSTM H 256..1024, B 1..4, T 25..150; GRU H 512/1024 with T 1500 and
    # 375), the GRU sequences scaled down to T=150 so that one call stays well under a second.
    cases = []
    for H, T in ((256, 150), (512, 25), (1024, 25)):
        for B in (1, 2, 4):
            cases.append(Case("server", "forward", "lstm", B, T, H, H,
                              quick=(H, B) == (256, 1)))
    for H in (512, 1024):
        for B in (1, 2, 4):
            cases.append(Case("server", "forward", "gru", B, 150, H, H,
                              quick=(H, B) == (512, 2), note="DeepBench T=1500/375 scaled to 150"))
    return cases


def _batch():
    variants = (("lstm", True), ("gru", True), ("gru", False))
    return [Case("batch", "forward", cell, B, 50, H, H, reset_after=ra,
                 quick=(cell, ra, B, H) in (("lstm", True, 32, 256), ("gru", True, 8, 128),
                                            ("gru", False, 32, 256)))
            for cell, ra in variants for B in (8, 32, 64) for H in (128, 256, 512)]


def _training():
    return [Case("training", "training", cell, B, T, H, H,
                 quick=(cell, B) == ("lstm", 16))
            for cell in ("lstm", "gru") for B, T, H in ((16, 50, 128), (32, 50, 256),
                                                        (64, 25, 512))]


def _masked():
    return [Case("masked", "masked", cell, 32, 100, H, H, quick=(cell, H) == ("lstm", 128),
                 note="lengths uniform in 1..T (mean ~T/2)")
            for cell in ("lstm", "gru") for H in (128, 256)]


def _variants():
    """Cell variants (docs/variants.md): the projection shapes against torch's
    nn.LSTM(proj_size) (forward and training), and peepholes / clips / activations next to the
    plain cell of the same shape (peers that cannot express a feature are skipped)."""
    proj = [Case("variants", "forward", "lstm", 8, 100, 256, 512, quick=True,
                 variant=(("proj_size", 128),)),
            Case("variants", "forward", "lstm", 1, 100, 256, 1024, variant=(("proj_size", 256),)),
            Case("variants", "training", "lstm", 8, 50, 256, 512, variant=(("proj_size", 128),))]
    shape = (8, 100, 256, 256)
    cell = [Case("variants", "forward", "lstm", *shape, quick=True),
            Case("variants", "forward", "lstm", *shape, quick=True, variant=(("peepholes", True),)),
            Case("variants", "forward", "lstm", *shape, variant=(("clip", 3.0),)),
            Case("variants", "forward", "lstm", *shape,
                 variant=(("peepholes", True), ("clip", 3.0), ("cell_clip", 3.0))),
            Case("variants", "forward", "lstm", *shape,
                 variant=(("recurrent_activation", "hard_sigmoid"),)),
            Case("variants", "forward", "gru", *shape),
            Case("variants", "forward", "gru", *shape, variant=(("clip", 3.0),)),
            Case("variants", "forward", "gru", *shape, variant=(("activation", "relu"),)),
            Case("variants", "training", "lstm", 16, 50, 128, 128),
            Case("variants", "training", "lstm", 16, 50, 128, 128,
                 variant=(("peepholes", True), ("clip", 3.0)))]
    return proj + cell


SUITES = {"embedded": _embedded, "server": _server, "batch": _batch, "training": _training,
          "masked": _masked, "variants": _variants}
# "dropin" times whole PyTorch / Keras models (fastrnn.bench.dropin), not layer cases: it is
# not part of "all" and needs torch (and Keras for its Keras rows). "quantized" times int8
# layers against float32 and the peers' own quantized LSTMs (fastrnn.bench.quantized);
# "pipeline" times fastrnn right after other runtimes' ops (fastrnn.bench.pipeline).
SUITE_CHOICES = ("quick-default", *SUITES, "all", "dropin", "quantized", "pipeline")


def select(suite, quick=False):
    """Cases of a suite name. "quick-default" is the quick subset of every suite; `quick` keeps
    only the quick subset of the named suites."""
    if suite not in SUITE_CHOICES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITE_CHOICES)}")
    if suite == "dropin":
        raise ValueError("the dropin suite times whole models: see fastrnn.bench.dropin")
    if suite == "quantized":
        raise ValueError("the quantized suite has its own cases: see fastrnn.bench.quantized")
    if suite == "pipeline":
        raise ValueError("the pipeline suite has its own cases: see fastrnn.bench.pipeline")
    names = list(SUITES) if suite in ("all", "quick-default") else [suite]
    cases = [c for n in names for c in SUITES[n]()]
    if quick or suite == "quick-default":
        cases = [c for c in cases if c.quick]
    return cases
