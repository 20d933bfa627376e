"""Proof that every implementation is the same model as the reference (PyTorch), on the same data.

The checks (issue "Prove the implementations are the same model"), each run per implementation
against the reference on the same weights and the same inputs:

  1 shapes    the trainable parameter count the framework itself counts, and every canonical
              weight's key, shape and dtype, equal the spec; export->load->export is bit-identical.
  1 init      the initial weights follow the spec's initialiser families (bounds, std, orthogonality).
  2 logits    eval-mode logits on the probe weights agree (rtol = atol = 1e-4 fp32 on CPU, 1e-3 on
              a GPU or in reduced precision). Models with dropout are built with dropout on, so
              dropout left on at test time fails here.
  3 steps     five training steps on the same batches from the probe weights, dropout disabled:
              the same loss at every step and the same weights after each (tolerances per model
              below; each step starts from the reference's weights, see run_equivalence).
  3 dropout   (models with dropout) the first step of three fresh trainers with dropout on: the
              share of weights a step leaves exactly unchanged (a dropped unit passes no gradient)
              matches the reference's; catches a wrong rate, which checks 2 and 3 cannot see.
  4 data      the digest of the training arrays as seen inside the implementation's runtime equals
              the manifest of the prepared data (after the declared layout change).
  5 transfer  weights trained one epoch in A, exported and loaded into B, give the same test
              accuracy, the same predicted classes and logits within 10x check 2's bounds in B (both
              directions, A vs the reference).

Every check takes logits of any shape: (N, classes), or the transformer's (N, T, vocab), whose
accuracy and predicted classes are taken at every position.

The matrix shows each check's worst deviation: shapes |parameter count - spec|; init the worst
relative error of a tensor's std (|w - 0|, |w - 1| or |W'W - I| for those families); logits max
|logit - reference|; steps the larger of the relative loss deviation and the weight difference
as a share of a step; dropout the largest difference of unchanged shares; data the number of
digests that differ; transfer the largest test-accuracy difference.

Checks 1-4 need one worker per implementation ("equivalence" mode of harness.worker); check 5 a
"train-export" worker per implementation and one "predict" worker of the reference. Workers are how
other environments and languages (legacy Python, R, Julia) are reached.

The probe weights are drawn here with numpy from the spec's initialiser families, with every
bias and BatchNorm tensor (spec: zeros / ones) drawn at random too, so that a swapped bias,
gamma/beta or mean/var, or a wrong gate order in a bias, changes the logits.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from harness.canonical import load_weights, save_weights, weight_problems
from harness.protocol import RunOptions, epoch_batches
from harness.registry import Implementation, select
from harness.specs import ModelSpec, get_spec

REFERENCE = ("python", "pytorch", None)  # (lang, framework, backend)
CHECKS = ("shapes", "init", "logits", "steps", "dropout", "data", "transfer")
CHECK_NUMBERS = {"shapes": 1, "init": 1, "logits": 2, "steps": 3, "dropout": 3, "data": 4, "transfer": 5}
DATA_SAMPLES = 64  # synthetic training set of checks 1-4 (the smallest the harness prepares)
STEPS = 5
DROPOUT_DRAWS = 3  # fresh trainers, one first step each on one example (see check_dropout)


@dataclass(frozen=True)
class Tolerance:
    """allclose-style bounds, |a - ref| <= atol + rtol * |ref|, for logits and losses; for the
    weights after each training step, ||w - w_ref|| / ||w_ref - w_ref before the step|| per tensor:
    the difference as a share of how far that step moved the tensor in the reference."""

    logits_rtol: float
    logits_atol: float
    loss_rtol: float
    loss_atol: float
    weights_rel: float  # trainable tensors
    buffers_rel: float  # BatchNorm running statistics: their update needs only forward statistics
    step_batch: int  # examples per step in check 3
    eval_examples: int  # examples whose logits check 2 compares
    why: str


# Measured on this machine with the check's own protocol: PyTorch float32 against PyTorch float64
# (the rounding error of one float32 implementation) on the same probe weights and batches, each
# step started from the float64 weights of the previous one. Two float32 implementations that sum
# in different orders may differ by about twice that; each bound leaves at least 4x beyond.
TOLERANCES = {
    "cnn": Tolerance(1e-4, 1e-4, 1e-5, 1e-5, 1e-3, 1e-3, step_batch=16, eval_examples=16, why=(
        "SGD on a 4-conv CNN is well conditioned: float32 vs float64 differ by at most 1.1e-7 relative in "
        "the five losses and by 4.2e-5 of a step in any tensor; a wrong layer, flatten order or optimiser "
        "moves them by 1e-2 or more.")),
    "resnet50": Tolerance(1e-4, 1e-4, 2e-4, 1e-4, 0.2, 2e-3, step_batch=8, eval_examples=8, why=(
        "Eval-mode logits are as exact as the CNN's, but a training step is not: the float32 gradient "
        "passes 53 BatchNorm backward passes over 8 examples, each subtracting batch means, and comes out "
        "only 1-4 % accurate in some tensors (float32 vs float64: losses 8e-6 relative, the worst "
        "trainable tensor 3.6e-2 of its step, all weights together 2.4e-2); free-running, two float32 runs "
        "part within two steps. The running statistics need only forward statistics: 9.5e-5 of a step. "
        "With each step re-synchronised, 2e-4 on the losses, 20 % of a step on trainable tensors and "
        "0.2 % on running statistics catch a wrong BatchNorm momentum (10x), a running variance "
        "updated with the biased batch variance (n/(n-1) = 8/7 in layer4), a wrong optimiser or layer.")),
    "rnn": Tolerance(1e-4, 1e-4, 1e-5, 1e-5, 1e-3, 1e-3, step_batch=16, eval_examples=16, why=(
        "Adam on a GRU over 150 steps is well conditioned: float32 vs float64 differ by at most 1.8e-7 "
        "relative in the losses and 6.5e-6 of a step in any tensor; Keras' Adam epsilon (1e-7 for 1e-8) "
        "or a wrong gate order moves them by far more.")),
    "transformer": Tolerance(1e-4, 1e-4, 1e-5, 1e-5, 2e-3, 1e-3, step_batch=4, eval_examples=4, why=(
        "AdamW with clipping on 4 windows: float32 vs float64 differ by at most 2.4e-7 (test size) and 9.5e-7 "
        "(full size) in the logits, 1.8e-7 relative in the losses, and 2.6e-4 of a step in a tensor (seeds 0-3 at "
        "the test size, 1.0e-4 at full size). The worst tensor is always attn.qkv.bias: its key third has an exactly "
        "zero gradient (softmax ignores a constant added to every score of a query), so rounding is all its "
        "gradient, and Adam normalises rounding to a visible step. 2e-3 of a step leaves 4x beyond twice that and "
        "catches, at the test size and at full size, GELU's tanh approximation (4.7e-3 and 1.9e-2 of a step; at full "
        "size its logits also leave their bound), weight decay on LayerNorm (0.20, 0.28), clipping per tensor "
        "(0.038, 0.56); a causal mask off by one moves the logits by 0.05 and 0.31.")),
}
GPU_FACTOR = 10  # 1e-4 -> 1e-3 on a GPU or in reduced precision (TF32/cuDNN algorithms, bf16)
TRANSFER_ACCURACY = 0.005  # check 5: one near-tie argmax flip in 256 test examples is 0.0039
# Check 5 compares logits of *trained* weights: after an epoch ResNet-50's BatchNorm running
# variances are far from 1 and scale the float32 rounding of two implementations up (seen: 6e-4 to
# 1.2e-3 apart, with identical accuracy and classes, where check 2's untrained probe gives 2e-4).
# The bound is check 2's times this factor, the same allowance as reduced precision gets.
TRANSFER_LOGITS_FACTOR = GPU_FACTOR
# Check 3 dropout: the share of a tensor's slices that one step leaves exactly unchanged is a mean
# of m Bernoulli draws per trainer; its binomial sd bounds the noise (measured on PyTorch over 20
# seeds: 0.013 for fc1's 512 units against 0.019 binomial). A limit of 4.5 sd of the difference of
# two 3-draw means is 0.08 for fc1; fc1's dropout at 0.25 instead of 0.5 moves its share by 0.12-0.15.
DROPOUT_SIGMAS = 4.5


def tolerance(model: str, options: RunOptions) -> Tolerance:
    tol = TOLERANCES[model]
    if options.device == "cpu" and options.precision == "fp32":
        return tol
    f = GPU_FACTOR
    return replace(tol, logits_rtol=tol.logits_rtol * f, logits_atol=tol.logits_atol * f,
                   loss_rtol=tol.loss_rtol * f, loss_atol=tol.loss_atol * f, weights_rel=tol.weights_rel * f,
                   buffers_rel=tol.buffers_rel * f)


def has_dropout(spec: ModelSpec) -> bool:
    """Whether check 3 dropout applies: a model whose dropout zeroes whole units of an example (the
    CNN), so that a step leaves the slices of the dropped units' weights exactly unchanged. The
    transformer's dropout (attention probabilities and residual branches, over every position of a
    window) leaves no slice unchanged at any rate, and AdamW's weight decay moves every matrix
    anyway: the share would be 0 whatever the rate, a check that could not fail, so it is not run."""
    return any("dropout" in layer for layer in spec.layers) and not spec.sequence


def reference_impl(model: str) -> Implementation:
    lang, framework, backend = REFERENCE
    (impl,) = select(lang, framework, backend, model)
    return impl


# --------------------------------------------------------------------------- probe weights
def _fans(shape) -> tuple[int, int]:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _uniform_bounds(init: str) -> tuple[float, float]:
    a, b = init[len("uniform("):init.index(")")].split(",")
    return float(a), float(b)


def _normal_params(init: str) -> tuple[float, float]:
    """normal(mean,std), e.g. the transformer's "normal(0,0.02)"."""
    mean, std = init[len("normal("):init.index(")")].split(",")
    return float(mean), float(std)


def init_law(w) -> tuple[str, float, float]:
    """(family, low/-bound or mean, std) of a spec weight's initialiser, canonical layout."""
    fan_in, fan_out = _fans(w.shape) if len(w.shape) >= 2 else (0, 0)
    if w.init.startswith("glorot_uniform"):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return "uniform", bound, bound / math.sqrt(3)
    if w.init.startswith("he_normal_fan_out"):
        return "normal", 0.0, math.sqrt(2.0 / fan_out)
    if w.init.startswith("normal("):
        return ("normal", *_normal_params(w.init))
    if w.init.startswith("uniform("):
        a, b = _uniform_bounds(w.init)
        return "uniform", (b - a) / 2, (b - a) / math.sqrt(12)
    if w.init.startswith("orthogonal"):
        return "orthogonal", 0.0, 0.0
    if w.init in ("zeros", "ones"):
        return w.init, 0.0, 0.0
    raise ValueError(f"{w.key}: no law for initialiser {w.init!r}")


def probe_weights(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical weights drawn from the spec's families; zeros/ones tensors drawn at random too."""
    rng = np.random.default_rng([seed, 4242])
    out = {}
    for w in spec.weights:
        family, a, std = init_law(w)
        if family == "uniform":
            x = rng.uniform(-a, a, w.shape)
        elif family == "normal":
            x = rng.normal(a, std, w.shape)
        elif family == "orthogonal":
            q, r = np.linalg.qr(rng.normal(size=w.shape))
            x = q * np.sign(np.diag(r))
        elif family == "zeros":  # biases, BatchNorm beta and running mean
            x = rng.uniform(-0.1, 0.1, w.shape)
        else:  # BatchNorm gamma and running variance
            x = rng.uniform(0.5, 1.5, w.shape)
        out[w.key] = x.astype(np.float32)
    return out


# --------------------------------------------------------------------------- results of checks
@dataclass
class Check:
    ok: bool
    deviation: float  # the worst deviation, in the unit `detail` names
    detail: str

    def cell(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.deviation:.2g}"


def _allclose_score(a: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> tuple[float, float]:
    """(max |a-ref|, max |a-ref| / (atol + rtol |ref|)); the second is <= 1 iff allclose."""
    diff = np.abs(a.astype(np.float64) - ref.astype(np.float64))
    if diff.size == 0:
        return 0.0, 0.0
    bad = ~np.isfinite(diff)
    if bad.any():
        return math.inf, math.inf
    return float(diff.max()), float((diff / (atol + rtol * np.abs(ref.astype(np.float64)))).max())


def check_shapes(spec: ModelSpec, res: dict) -> Check:
    problems = []
    if res["param_count"] != spec.param_count:
        problems.append(f"{res['param_count']:,} trainable parameters, spec {spec.param_count:,}")
    problems += weight_problems(spec, res["shapes"])
    for what in ("roundtrip_init", "roundtrip_probe"):
        if res[what]:
            problems.append(f"{what.replace('_', ' ')} not bit-identical for {', '.join(res[what][:3])}")
    return Check(not problems, float(abs(res["param_count"] - spec.param_count)),
                 "; ".join(problems) or f"{spec.param_count:,} parameters, {len(spec.weights)} tensors, round trip exact")


def check_init(spec: ModelSpec, weights: dict) -> Check:
    """Bounds and sample std per the spec's families (tolerance from the sampling error of the
    std), and independence: no two randomly initialised tensors start bit-identical (an
    initializer object reused with one seed gives every kernel of a shape the same draw)."""
    worst, notes, ok = 0.0, [], True
    seen: dict[bytes, str] = {}
    for w in spec.weights:
        if w.key not in weights:
            continue
        a = weights[w.key].astype(np.float64)
        family, bound, std = init_law(w)
        if family in ("zeros", "ones"):
            dev = float(np.abs(a - (family == "ones")).max()) if a.size else 0.0
            bad = dev != 0.0
        elif family == "orthogonal":
            m = a.reshape(a.shape[0], -1)
            gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
            dev = float(np.abs(gram - np.eye(len(gram))).max())
            bad = dev > 1e-4
        else:
            if w.init.startswith("uniform("):
                mid = sum(_uniform_bounds(w.init)) / 2
            else:
                mid = bound if w.init.startswith("normal(") else 0.0  # a normal family's mean
            dev = abs(a.std() / std - 1)
            # the sample std of n draws has relative error ~ sqrt((kurtosis-1)/(4n)) <= 0.71/sqrt(n)
            bad = dev > 6 * 0.71 / math.sqrt(a.size) + 1e-3 or abs(a.mean() - mid) > 6 * std / math.sqrt(a.size)
            if family == "uniform":
                bad = bad or float(np.abs(a - mid).max()) > bound * (1 + 1e-6)
        worst = max(worst, dev)
        if bad:
            ok = False
            notes.append(f"{w.key}: not {w.init} (std {a.std():.4g}, want {std:.4g}; range "
                         f"[{a.min():.4g}, {a.max():.4g}])")
        if family not in ("zeros", "ones"):
            twin = seen.setdefault(a.tobytes() + str(a.shape).encode(), w.key)
            if twin != w.key:
                ok = False
                notes.append(f"{w.key}: starts bit-identical to {twin} (one random draw reused)")
    return Check(ok, worst, "; ".join(notes[:3]) or "every tensor follows its family (worst: relative std error)")


def check_logits(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> Check:
    if ref.shape != got.shape:
        return Check(False, math.inf, f"logits shape {got.shape}, reference {ref.shape}")
    dev, score = _allclose_score(got, ref, tol.logits_rtol, tol.logits_atol)
    return Check(score <= 1, dev, f"max |logit - reference| {dev:.3g} (rtol {tol.logits_rtol:g}, "
                 f"atol {tol.logits_atol:g}; {score:.2g} of the bound)")


def check_steps(spec: ModelSpec, ref_res: dict, res: dict, tol: Tolerance) -> Check:
    """Losses of the five steps, and per step and tensor ||w - w_ref|| / ||w_ref step|| (each step
    from the reference's weights after the previous one: see run_equivalence)."""
    ref_loss, loss = np.asarray(ref_res["losses"]), np.asarray(res["losses"])
    if loss.shape != ref_loss.shape:
        return Check(False, math.inf, f"{loss.size} losses for {ref_loss.size} steps")
    _, loss_score = _allclose_score(loss, ref_loss, tol.loss_rtol, tol.loss_atol)
    loss_rel = float(np.max(np.abs(loss - ref_loss) / np.abs(ref_loss))) if loss.size else 0.0
    buffers = {w.key for w in spec.weights if not w.trainable}
    worst = {"weights": (0.0, "-"), "running statistics": (0.0, "-")}
    for k, norms in enumerate(res["steps"] or [], start=1):  # None: this is the reference itself
        for key, (diff, moved) in norms.items():
            rel = diff / moved if moved > 0 else (math.inf if diff > 0 else 0.0)
            kind = "running statistics" if key in buffers else "weights"
            if not rel <= worst[kind][0]:  # also takes NaN
                worst[kind] = (rel, f"{key} at step {k}")
    limits = {"weights": tol.weights_rel, "running statistics": tol.buffers_rel}
    ok = loss_score <= 1 and all(worst[kind][0] <= limits[kind] for kind in worst)
    parts = [f"{kind}: {v:.2g} of a step ({where}; limit {limits[kind]:g})"
             for kind, (v, where) in worst.items() if kind == "weights" or buffers]
    detail = (f"losses {', '.join(f'{v:.6g}' for v in loss)} (max relative deviation {loss_rel:.2g}, rtol "
              f"{tol.loss_rtol:g}); " + "; ".join(parts))
    return Check(ok, max(loss_rel, *(v for v, _ in worst.values())), detail)  # all relative: the worst


def check_dropout(ref: dict, got: dict) -> Check:
    """Compare the shares of unchanged slices per tensor axis; binomial noise bound per share."""
    worst, notes, ok = 0.0, [], True
    for key, (f_ref, m) in ref.items():
        if key not in got:
            return Check(False, math.inf, f"no unchanged-share for {key}")
        f = got[key][0]
        pooled = (f + f_ref) / 2
        limit = DROPOUT_SIGMAS * math.sqrt(2 * pooled * (1 - pooled) / m) + 1.5 / m
        dev = abs(f - f_ref)
        worst = max(worst, dev)
        if dev > limit:
            ok = False
            notes.append(f"{key}: {f:.3f} of slices unchanged, reference {f_ref:.3f} (limit {limit:.3f})")
    return Check(ok, worst, "; ".join(notes[:3]) or "share of weights a dropout step leaves unchanged "
                 "matches the reference (worst: difference of shares)")


def expected_digests(folder: Path, manifest: dict, layout: str) -> dict[str, str]:
    """What an implementation must see: the manifest's bytes, after the declared layout change."""
    from harness.data.cache import array_digest, open_prepared
    from harness.model_input import to_layout

    want = {"x": manifest["arrays"]["x_train"]["sha256"], "y": manifest["arrays"]["y_train"]["sha256"]}
    if layout != "NCHW" and len(manifest["arrays"]["x_train"]["shape"]) == 4:
        want["x"] = array_digest(to_layout(open_prepared(folder)["x_train"], layout))
    return want


def check_data(folder: Path, manifest: dict, res: dict) -> Check:
    want = expected_digests(folder, manifest, res["layout"])
    notes = []
    for name, disk in res["disk"].items():
        if disk != manifest["arrays"][name]["sha256"]:
            notes.append(f"{name} on disk changed since the manifest")
    for name in ("x", "y"):
        seen = res["digest"][name]
        if seen["sha256"] != want[name]:
            notes.append(f"{name} as seen {seen['by']}: {seen['sha256'][:12]}.., manifest{' in ' + res['layout'] if name == 'x' else ''}: {want[name][:12]}..")
    how = ", ".join(f"{n} by {res['digest'][n]['by']}" for n in ("x", "y"))
    return Check(not notes, float(len(notes)), "; ".join(notes) or f"SHA-256 equal to the manifest ({how})")


def check_transfer(y_test: np.ndarray, logits: dict, tol: Tolerance) -> Check:
    """logits[(trained_in, run_in)], trained_in/run_in in {"impl", "ref"}: the test set's eval logits.
    Weights trained in one and run in the other must give the same accuracy, the same predicted
    classes, and logits within TRANSFER_LOGITS_FACTOR times check 2's bounds."""
    notes, worst, ok = [], 0.0, True
    for src, where in (("impl", "this implementation"), ("ref", "the reference")):
        home, away = np.asarray(logits[src, src]), np.asarray(logits[src, "ref" if src == "impl" else "impl"])
        if home.shape != away.shape:
            return Check(False, math.inf, f"trained in {where}: logits {home.shape} there, {away.shape} in the other")
        acc_home = float((home.argmax(-1) == y_test).mean())  # per example, or per position of a sequence
        acc_away = float((away.argmax(-1) == y_test).mean())
        flips = float((home.argmax(-1) != away.argmax(-1)).mean())
        f = TRANSFER_LOGITS_FACTOR
        dev, score = _allclose_score(away, home, tol.logits_rtol * f, tol.logits_atol * f)
        worst = max(worst, abs(acc_home - acc_away))
        bad = abs(acc_home - acc_away) > TRANSFER_ACCURACY or flips > TRANSFER_ACCURACY or score > 1
        ok = ok and not bad
        notes.append(f"{'FAIL ' if bad else ''}trained in {where}: test accuracy {acc_home:.4f} there, "
                     f"{acc_away:.4f} in the other, {flips:.2%} of predicted classes and logits up to "
                     f"{dev:.2g} apart ({score:.2g} of the bound)")
    return Check(ok, worst, "; ".join(notes))


# --------------------------------------------------------------------------- running the workers
@dataclass
class CheckInputs:
    """Everything the checks of one model share: data, probe weights, batches, tolerance."""

    spec: ModelSpec
    options: RunOptions
    tol: Tolerance
    work: Path
    data: object  # harness.data.Prepared (checks 1-4)
    probe_path: Path
    rows: list  # (STEPS, step_batch) training rows of check 3
    dropout_rows: list  # (DROPOUT_DRAWS, 1): one example per dropout draw
    transfer_data: object = None  # harness.data.Prepared (check 5)
    timeout: float = 1800.0
    _probe: dict | None = None

    @property
    def probe(self) -> dict:
        if self._probe is None:
            self._probe = load_weights(self.probe_path)
        return self._probe


def step_rows(n: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """`steps` rows of the harness's epoch order (continuing into the next epoch if needed)."""
    out, epoch = [], 0
    while sum(len(r) for r in out) < steps:
        out.append(epoch_batches(n, batch, seed, epoch))
        epoch += 1
    return np.concatenate(out)[:steps]


def make_inputs(model: str, work: Path, options: RunOptions | None = None, data_dir=None,
               transfer_samples: int | None = None, timeout: float = 1800.0) -> CheckInputs:
    from harness import data as datasets

    spec = get_spec(model)
    options = options or RunOptions()
    tol = tolerance(model, options)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    prepared = datasets.prepare("synthetic", spec, DATA_SAMPLES, data_dir)
    probe_path = save_weights(work / "probe.npz", probe_weights(spec, options.seed))
    rows = step_rows(DATA_SAMPLES, tol.step_batch, STEPS, options.seed)
    dropout_rows = step_rows(DATA_SAMPLES, 1, DROPOUT_DRAWS, options.seed + 1)
    transfer = None
    if transfer_samples:
        transfer = datasets.prepare("synthetic", spec, transfer_samples, data_dir)
    return CheckInputs(spec, options, tol, work, prepared, probe_path, rows.tolist(), dropout_rows.tolist(),
                 transfer, timeout)


def _impl_dir(inputs: CheckInputs, impl: Implementation) -> Path:
    d = inputs.work / impl.label.replace("/", "_").replace("[", "-").replace("]", "")
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_worker(impl: Implementation, mode: str, inputs: CheckInputs, extra: dict, prepared=None,
               log_path: Path | None = None):
    from harness.launch import run_worker as launch

    return launch(impl, replace(inputs.options, backend=impl.backend), mode, prepared or inputs.data, epochs=1,
                  batch_size=inputs.spec.batch_size, timeout=inputs.timeout, extra=extra, log_path=log_path)


class WorkerFailed(Exception):
    pass


def run_equivalence(impl: Implementation, inputs: CheckInputs, ref: dict | None = None) -> dict:
    """Checks 1-4 in one worker; returns its result with the paths of the files it wrote.

    `ref`: the reference's result. Without it, this worker is the reference: it writes its weights
    after each training step. With it, each step K > 1 starts from the reference's weights after
    step K-1 (the implementation's own optimiser state carries on), so every step is compared from
    the same point: ResNet-50's float32 gradient is only 1-4 % accurate in some tensors (53
    BatchNorm backward passes over 8 examples), so free-running trajectories part within two steps
    whatever the implementation; re-synchronising keeps each comparison at one step's rounding."""
    d = _impl_dir(inputs, impl)
    extra = {"work": str(d), "probe": str(inputs.probe_path), "rows": inputs.rows,
             "dropout_rows": inputs.dropout_rows if has_dropout(inputs.spec) else None,
             "eval_examples": inputs.tol.eval_examples, "teacher": ref["files"]["steps"] if ref else None}
    t = time.monotonic()
    outcome = run_worker(impl, "equivalence", inputs, extra, log_path=d / "equivalence.log")
    if outcome.status != "ok":
        raise WorkerFailed(f"{outcome.error}\n{outcome.log}")
    res = outcome.result
    res["wall_s"] = time.monotonic() - t
    (d / "equivalence.json").write_text(json.dumps(res, default=str))  # kept with --keep: re-evaluable
    return res


def evaluate(inputs: CheckInputs, ref: dict, res: dict) -> dict[str, Check]:
    """Checks 1-4 (and init, dropout) of one implementation's worker result against the reference's."""
    spec, tol = inputs.spec, inputs.tol
    out = {"shapes": check_shapes(spec, res), "init": check_init(spec, load_weights(res["files"]["init"]))}
    out["logits"] = check_logits(np.load(ref["files"]["logits"]), np.load(res["files"]["logits"]), tol)
    out["steps"] = check_steps(spec, ref, res, tol)
    if res.get("dropout") is not None:
        out["dropout"] = check_dropout(ref["dropout"], res["dropout"])
    out["data"] = check_data(Path(inputs.data.folder), inputs.data.manifest, res)
    return out


def run_transfer(impls: list[Implementation], inputs: CheckInputs, ref_impl: Implementation, say=print) -> dict:
    """Check 5 for every implementation: train one epoch in each, cross-evaluate with the reference."""
    prepared = inputs.transfer_data
    y_test = np.load(Path(prepared.folder) / "y_test.npy")
    x_test = str(Path(prepared.folder) / "x_test.npy")
    trained, own, errors = {}, {}, {}
    order = [ref_impl] + [i for i in impls if i != ref_impl]
    for impl in order:
        d = _impl_dir(inputs, impl)
        out = d / "trained.npz"
        cross = [] if impl == ref_impl else [{"weights": str(trained[ref_impl]), "out": str(d / "ref_logits.npy")}]
        t = time.monotonic()
        outcome = run_worker(impl, "train-export", inputs, {"out": str(out), "input": x_test, "cross": cross},
                             prepared=prepared, log_path=d / "train-export.log")
        say(f"  {impl.label}: train-export {outcome.status} ({time.monotonic() - t:.0f} s)")
        if outcome.status != "ok":
            if impl == ref_impl:
                raise WorkerFailed(f"reference train-export: {outcome.error}\n{outcome.log}")
            errors[impl] = outcome.error
            continue
        trained[impl] = out
        own[impl] = {"self": np.load(d / "logits.npy")}
        own[impl]["ref_in_impl"] = np.load(d / "ref_logits.npy") if cross else own[impl]["self"]
    pairs = [{"weights": str(trained[i]), "out": str(_impl_dir(inputs, i) / "in_ref_logits.npy")}
             for i in order if i in trained and i != ref_impl]
    if pairs:
        outcome = run_worker(ref_impl, "predict", inputs, {"input": x_test, "pairs": pairs}, prepared=prepared,
                             log_path=_impl_dir(inputs, ref_impl) / "predict.log")
        if outcome.status != "ok":
            raise WorkerFailed(f"reference predict: {outcome.error}\n{outcome.log}")
    result = {}
    ref_home = own[ref_impl]["self"]
    for impl in order:
        if impl in errors:
            result[impl] = errors[impl]
            continue
        in_ref = ref_home if impl == ref_impl else np.load(_impl_dir(inputs, impl) / "in_ref_logits.npy")
        logits = {("impl", "impl"): own[impl]["self"], ("impl", "ref"): in_ref,
                  ("ref", "ref"): ref_home, ("ref", "impl"): own[impl]["ref_in_impl"]}
        result[impl] = check_transfer(y_test, logits, inputs.tol)
    return result


# --------------------------------------------------------------------------- the whole report
@dataclass
class Row:
    impl: str
    status: str  # "ok" | "failed" | "error" | "skipped"
    reason: str = ""
    checks: dict = field(default_factory=dict)  # name -> Check
    seconds: float | None = None
    deviations: list = field(default_factory=list)  # what the implementation declares (trainer.info)

    def to_dict(self) -> dict:
        return {"impl": self.impl, "status": self.status, "reason": self.reason, "seconds": self.seconds,
                "deviations": self.deviations, "checks": {k: asdict(v) for k, v in self.checks.items()}}


def check_model(model: str, impls: list[Implementation], skipped: list, options: RunOptions, work: Path,
                checks=CHECKS, data_dir=None, transfer_samples: int | None = None, timeout: float = 1800.0,
                say=print) -> dict:
    """Run the checks for one model over `impls` against the reference; returns the report (JSON-able)."""
    ref_impl = reference_impl(model)
    inputs = make_inputs(model, work, options, data_dir, transfer_samples if "transfer" in checks else None, timeout)
    rows: dict[Implementation, Row] = {}
    early = [c for c in checks if c != "transfer"]
    if early:
        say(f"[check] {model}: reference {ref_impl.label}")
        ref = run_equivalence(ref_impl, inputs)
        for impl in [ref_impl] + [i for i in impls if i != ref_impl]:
            if impl == ref_impl:
                res = ref
            else:
                try:
                    res = run_equivalence(impl, inputs, ref)
                except WorkerFailed as e:
                    say(f"  {impl.label}: error")
                    rows[impl] = Row(impl.label, "error", str(e).splitlines()[0] if str(e) else "worker failed")
                    continue
            found = evaluate(inputs, ref, res)
            rows[impl] = Row(impl.label, "ok", checks={k: v for k, v in found.items() if k in checks},
                             seconds=round(res["wall_s"], 1), deviations=list(res["info"].get("deviations", [])))
            say(f"  {impl.label}: " + " ".join(f"{k} {v.cell()}" for k, v in rows[impl].checks.items()))
    if "transfer" in checks:
        say(f"[check] {model}: transfer (check 5) on {inputs.transfer_data.n_train} synthetic examples")
        for impl, found in run_transfer([i for i in impls if i not in rows or rows[i].status == "ok"],
                                        inputs, ref_impl, say).items():
            row = rows.setdefault(impl, Row(impl.label, "ok"))
            if isinstance(found, Check):
                row.checks["transfer"] = found
            else:
                row.status, row.reason = "error", found
    for row in rows.values():
        if row.status == "ok" and not all(c.ok for c in row.checks.values()):
            row.status = "failed"
    ordered = [rows[i] for i in [ref_impl] + impls if i in rows]
    seen = set()
    ordered = [r for r in ordered if not (r.impl in seen or seen.add(r.impl))]
    ordered += [Row(i.label, "skipped", reason) for i, reason in skipped]
    return {
        "model": model, "reference": ref_impl.label, "checks": list(checks),
        "options": inputs.options.to_dict(),
        "tolerance": asdict(inputs.tol), "transfer_accuracy_tolerance": TRANSFER_ACCURACY,
        "data": {"checks_1_4": inputs.data.manifest, "transfer": inputs.transfer_data.manifest if inputs.transfer_data else None},
        "rows": [r.to_dict() for r in ordered],
        "passed": all(r.status in ("ok", "skipped") for r in ordered),
    }


def matrix(report: dict) -> str:
    """Implementation x check, each cell 'ok|FAIL worst-deviation'; skipped rows with their reason."""
    cols = [c for c in CHECKS if c in report["checks"]]
    head = ["implementation"] + [f"{CHECK_NUMBERS[c]} {c}" for c in cols] + ["status"]
    lines = []
    for r in report["rows"]:
        if r["status"] in ("skipped", "error"):
            cells = [r["impl"]] + ["-"] * len(cols) + [f"{r['status']}: {r['reason']}"]
        else:
            cells = [r["impl"]] + [(f"{'ok' if c['ok'] else 'FAIL'} {c['deviation']:.2g}" if (c := r["checks"].get(k))
                                    else "-") for k in cols] + [r["status"]]
        lines.append(cells)
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head) - 1)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + "  " + str(cells[-1])  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(x) for x in lines])


def describe_tolerance(report: dict) -> str:
    t = report["tolerance"]
    return (f"logits rtol/atol {t['logits_rtol']:g}, losses rtol {t['loss_rtol']:g}, weights {t['weights_rel']:g} "
            f"and running statistics {t['buffers_rel']:g} of a step, transfer accuracy "
            f"{report['transfer_accuracy_tolerance']:g}")


def declared(report: dict) -> list[str]:
    """The deviations implementations declare, one line each (shown under the matrix)."""
    return [f"{r['impl']}: {d}" for r in report["rows"] for d in r.get("deviations", [])]


def failures(report: dict) -> list[str]:
    out = []
    for r in report["rows"]:
        if r["status"] == "error":
            out.append(f"{r['impl']}: {r['reason']}")
        for name, c in r["checks"].items():
            if not c["ok"]:
                out.append(f"{r['impl']} {name}: {c['detail']}")
    return out


def dumps(report: dict) -> str:
    return json.dumps(report, indent=1, default=str)


def temporary_work() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="dl-rosetta-check-")
