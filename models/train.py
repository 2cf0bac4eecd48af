"""Training, evaluation and approximate-aware fine-tuning of the two models, and their
checkpoints.

A training run is two phases, both deterministic for a seed (fixed shuffles, single-
threaded-safe kernels; fake-quant GEMMs multiply integers exactly):

1. fp32 pre-training (``epochs``),
2. calibration of the observers (a few fake-quant batches) and quantization-aware
   training (``qat_epochs``) in fake-quant mode.

Each phase keeps the weights of its best validation epoch. The integer model needs no
separate conversion step: in ``integer`` mode every integer constant is derived from the
frozen scales (see :mod:`axsa.models.layers`), and :func:`export_integer` writes them.

Checkpoints are ``torch.save`` dicts ``{"format", "kind", "config", "state_dict",
"data", "meta"}`` loadable with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from axsa.errors import InputError

from . import data as datasets
from .layers import QLinear, QuantModel
from .ts import TSConfig, TSTransformer
from .vit import TinyViT, ViTConfig

KINDS = ("ts", "vit")
FORMAT = "axsa-model-1"
EVAL_MODES = ("fp32", "fake_quant", "integer")


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer settings of one run (defaults are what the demo checkpoints use)."""
    epochs: int = 30
    qat_epochs: int = 20
    lr: float = 3e-3
    qat_lr: float = 1e-3
    batch: int = 64
    seed: int = 0
    calib_batches: int = 8

    def __post_init__(self):
        for f in ("epochs", "qat_epochs", "calib_batches"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                raise InputError(f"{f} must be a non-negative integer, got {getattr(self, f)!r}")
        check_run(self.lr, self.batch, self.seed)
        check_run(self.qat_lr, name="qat_lr")


#: largest seed (torch takes 64-bit seeds; the QAT phase uses seed + 1)
MAX_SEED = 2**63 - 2


def check_run(lr: float, batch: int = 1, seed: int = 0, name: str = "lr") -> None:
    """InputError naming the value unless the learning rate is positive and finite, the
    batch size a positive integer and the seed an integer in 0..MAX_SEED."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
            or lr <= 0:
        raise InputError(f"{name} must be a positive finite number, got {lr!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")


def default_train_config(kind: str) -> TrainConfig:
    """The settings the demo checkpoints use for ``kind``."""
    if kind == "vit":
        return TrainConfig(epochs=80, qat_epochs=20)
    return TrainConfig(epochs=60, qat_epochs=30)


# ----------------------------------------------------------------------------------------
# models and data


def build_model(kind: str, **config) -> QuantModel:
    """A fresh model of ``kind`` ("ts" or "vit") with config fields ``config``."""
    if kind == "ts":
        return TSTransformer(TSConfig(**config))
    if kind == "vit":
        return TinyViT(ViTConfig(**config))
    raise InputError(f"unknown model {kind!r} (models: {', '.join(KINDS)})")


def load_data(kind: str, source: dict | None = None, model: QuantModel | None = None):
    """The dataset of a model: co2 or a CSV for "ts" (``source``), digits for "vit"."""
    if kind == "vit":
        return datasets.digits_dataset()
    source = source or {"source": "co2"}
    window = model.config.window if model is not None else TSConfig.window
    horizon = model.config.horizon if model is not None else TSConfig.horizon
    if source.get("source") == "csv":
        values, names = datasets.load_csv(source["path"], source.get("date_column"),
                                          source.get("columns"))
        if model is not None and values.shape[1] != model.config.channels:
            raise InputError(f"CSV file {source['path']!r} has {values.shape[1]} value "
                             f"column(s), the model expects {model.config.channels}")
        return datasets.windows(values, window, horizon, names)
    return datasets.co2_dataset(window, horizon)


# ----------------------------------------------------------------------------------------
# training


def _loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y) if kind == "ts" else F.cross_entropy(out, y)


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def calibrate(model: QuantModel, x: torch.Tensor, batches: int = 8, batch: int = 64) -> None:
    """Reset and fill the activation observers from fake-quant forwards over ``x``."""
    model.set_mode("fake_quant")
    for mod in model.modules():
        if hasattr(mod, "seen") and hasattr(mod, "amax"):
            mod.seen.zero_()
    model.train()
    with torch.no_grad():
        for i in range(min(batches, math.ceil(len(x) / batch))):
            model(x[i * batch:(i + 1) * batch])
    model.eval()


def run_epochs(model: QuantModel, ds, mode: str, epochs: int, lr: float, batch: int,
               seed: int, progress: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train ``model`` in ``mode`` for ``epochs`` (Adam, cosine LR, grad-norm clip 1);
    keeps the weights of the best validation epoch. Returns per-epoch metrics."""
    model.set_mode(mode)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = max(1, epochs * math.ceil(len(ds.train) / batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    best, best_state, history = None, None, []
    for ep in range(epochs):
        model.train()
        total = 0.0
        for idx in _batches(len(ds.train), batch, gen):
            out = model(ds.train.x[idx])
            loss = _loss(model.kind, out, ds.train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        val = metrics(model, ds.val, mode)
        rec = {"epoch": ep + 1, "mode": mode, "loss": total / len(ds.train), **val}
        history.append(rec)
        score = _score(model.kind, val)
        if best is None or score < best:
            best, best_state = score, copy.deepcopy(model.state_dict())
        if progress:
            progress(ep + 1, rec)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _score(kind: str, m: dict) -> float:
    return m["rmse"] if kind == "ts" else -m["top1"]


def fit(kind: str, bits: int = 8, train: TrainConfig = TrainConfig(), ds=None,
        progress: Callable[[str, int, int, dict], None] | None = None,
        **model_config) -> tuple[QuantModel, list[dict]]:
    """Build, pre-train in fp32, calibrate and QAT-train a model; deterministic per seed."""
    torch.manual_seed(train.seed)
    model = build_model(kind, bits=bits, **model_config)
    ds = ds if ds is not None else load_data(kind, model=model)
    hist = []
    cb = (lambda phase, total: (lambda ep, rec: progress(phase, ep, total, rec))) \
        if progress else (lambda phase, total: None)
    hist += run_epochs(model, ds, "fp32", train.epochs, train.lr, train.batch, train.seed,
                       cb("fp32", train.epochs))
    calibrate(model, ds.train.x, train.calib_batches, train.batch)
    if train.qat_epochs:
        hist += run_epochs(model, ds, "fake_quant", train.qat_epochs, train.qat_lr,
                           train.batch, train.seed + 1, cb("qat", train.qat_epochs))
    model.set_mode("fake_quant").eval()
    return model, hist


def finetune(model: QuantModel, ds, tables: dict, epochs: int = 10, lr: float = 5e-4,
             batch: int = 64, seed: int = 0, grad: str = "ste",
             progress: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Approximate-aware fine-tuning: fake-quant training with ``tables`` in the loop."""
    check_run(lr, batch, seed)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise InputError(f"epochs must be a non-negative integer, got {epochs!r}")
    if grad not in ("ste", "table"):
        raise InputError(f"unknown gradient {grad!r}: expected 'ste' or 'table'")
    model.hook.assign(tables)
    model.hook.grad = grad
    try:
        return run_epochs(model, ds, "fake_quant", epochs, lr, batch, seed, progress)
    finally:
        model.hook.grad = "ste"


# ----------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def predict(model: QuantModel, x: torch.Tensor, mode: str, batch: int = 512) -> torch.Tensor:
    model.set_mode(mode).eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def metrics(model: QuantModel, split, mode: str) -> dict:
    """RMSE and MAE in the series' units (ts) or top-1 accuracy in [0, 1] (vit)."""
    return metrics_of(model.kind, split, predict(model, split.x, mode))


def metrics_of(kind: str, split, out: torch.Tensor) -> dict:
    """`metrics` of model outputs `out` for `split` (e.g. outputs computed elsewhere)."""
    if kind == "ts":
        err = (split.to_units(out) - split.to_units(split.y)).to(torch.float64)
        return {"rmse": float(err.pow(2).mean().sqrt()), "mae": float(err.abs().mean())}
    return {"top1": float((out.argmax(-1) == split.y).to(torch.float64).mean())}


def evaluate(model: QuantModel, ds, tables: dict | None = None, split: str = "test") -> dict:
    """Metrics of every execution mode; ``approx`` (integer mode with ``tables``) when
    tables are given. Keys: ``fp32``, ``fake_quant``, ``integer``[, ``approx``]."""
    part = getattr(ds, split)
    saved = dict(model.hook.tables)
    model.hook.clear()
    try:
        res = {mode: metrics(model, part, mode) for mode in EVAL_MODES}
        if tables is not None:
            model.hook.assign(tables)
            res["approx"] = metrics(model, part, "integer")
    finally:
        model.hook.tables = saved
    return res


def record_streams(model: QuantModel, x: torch.Tensor, tables: dict | None = None) -> dict:
    """Integer operand codes of every GEMM for inputs ``x`` (see GemmHook.save_streams)."""
    saved = dict(model.hook.tables)
    model.hook.assign(tables or {})
    model.hook.start_recording()
    try:
        predict(model, x, "integer")
    finally:
        recs = model.hook.stop_recording()
        model.hook.tables = saved
    return recs


def export_integer(model: QuantModel) -> dict[str, np.ndarray]:
    """Every integer constant of the integer model, as numpy arrays.

    Keys are ``<gemm name>.<field>`` for Linear GEMMs (``weight`` (out, in) codes,
    ``bias`` in the accumulator scale, ``m``, ``s`` per output channel, ``relu``,
    ``out_bits``, float ``scale_in/scale_w/scale_out``) and ``<module path>.<field>``
    for the other blocks: residual adds (``mx``, ``my``, ``s``), LayerNorms (``gamma``,
    ``beta``, ``m``, ``s``), attention (``scores_m/s``, ``exp_table``, ``av_m/s``),
    pooling (``m``, ``s``); plus ``input.scale`` and the position table ``pos.codes``,
    ``pos.scale``. Runs one integer forward on a zero input to collect them.
    """
    shape = ((1, model.config.window, model.config.channels) if model.kind == "ts"
             else (1, model.config.image, model.config.image))
    predict(model, torch.zeros(shape), "integer")
    out = {"input.scale": model.iq.scale().numpy()}
    if model.kind == "ts":
        q, s = model._pe_codes()
    else:
        q, s = model.posq.codes(model.pos).detach().to(torch.int64), model.posq.scale()
    out["pos.codes"], out["pos.scale"] = q.numpy(), s.numpy()
    for path, mod in model.named_modules():
        rec = getattr(mod, "_cache", {}).get("export")
        if rec is None:
            continue
        prefix = mod.name if isinstance(mod, QLinear) else path
        for key, val in rec.items():
            out[f"{prefix}.{key}"] = val.numpy()
    return out


# ----------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(model: QuantModel, path: str | Path, data: dict | None = None,
                    meta: dict | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "kind": model.kind, "config": model.config.to_dict(),
                "state_dict": model.state_dict(), "data": data or {"source": (
                    "co2" if model.kind == "ts" else "digits")},
                "meta": meta or {}}, p)
    return p


def demo_checkpoint(kind: str) -> Path:
    """Path of the demo checkpoint shipped in the package."""
    if kind not in KINDS:
        raise InputError(f"unknown model {kind!r} (models: {', '.join(KINDS)})")
    return Path(str(resources.files("axsa.models") / "checkpoints" / f"{kind}.pt"))


def load_checkpoint(path: str | Path | None, kind: str | None = None):
    """(model in fake-quant eval mode, data source dict, meta) from a checkpoint file;
    ``path=None`` loads the shipped demo checkpoint of ``kind``.

    The one reader of checkpoints: the file is loaded with ``weights_only=True`` and
    checked (`check_checkpoint`) before any model is built from it, so a damaged or
    foreign file is an InputError naming it and what is wrong.
    """
    if path is None:
        if kind is None:
            raise InputError("give a checkpoint or a model kind")
        path = demo_checkpoint(kind)
        if not path.is_file():
            raise InputError(f"the demo checkpoint {str(path)!r} is missing; run "
                             "scripts/make_checkpoints.py")
    p = Path(path)
    where = f"checkpoint file {str(path)!r}"
    if not p.is_file():
        raise InputError(f"{where} does not exist" if not p.exists() else
                         f"{where} is not a file")
    try:
        with warnings.catch_warnings():   # torch's notes on foreign pickles: we say it
            warnings.simplefilter("ignore")
            ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:   # torch raises many kinds for a damaged or foreign file
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise InputError(f"{where} is not a readable torch checkpoint: damaged, truncated "
                         f"or another kind of file ({type(exc).__name__}: {first})") from None
    model = check_checkpoint(ck, where)
    if kind is not None and ck["kind"] != kind:
        raise InputError(f"{where} holds a {ck['kind']!r} model, not {kind!r}")
    model.load_state_dict(ck["state_dict"])
    model.set_mode("fake_quant").eval()
    return model, ck.get("data", {}), ck.get("meta", {})


#: model config class per kind
CONFIGS = {"ts": TSConfig, "vit": ViTConfig}
#: entries of a checkpoint dict; "data" and "meta" may be absent
CHECKPOINT_KEYS = ("format", "kind", "config", "state_dict", "data", "meta")


def check_checkpoint(ck, where: str) -> QuantModel:
    """Check a loaded checkpoint dict; return a fresh model of its kind and config whose
    state matches it key for key and shape for shape (not yet loaded).

    InputError, starting with `where`, for: not an axsa checkpoint, a missing entry, an
    unknown model kind, config keys the model does not have or values it refuses, state
    tensors missing, extra, of the wrong shape, not tensors, or holding NaN or inf, and a
    data source or meta that is not an object.
    """
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"{where} is not an axsa model checkpoint (no format "
                         f"{FORMAT!r}; axsa train writes them)")
    for key in ("kind", "config", "state_dict"):
        if key not in ck:
            raise InputError(f"{where} has no {key!r} entry: the file is damaged")
    extra = [k for k in ck if k not in CHECKPOINT_KEYS]
    if extra:
        raise InputError(f"{where} has unknown entries {', '.join(map(repr, extra))}")
    kind = ck["kind"]
    if kind not in KINDS:
        raise InputError(f"{where} holds an unknown model kind {kind!r} "
                         f"(models: {', '.join(KINDS)})")
    for key, want in (("config", dict), ("state_dict", dict), ("data", dict), ("meta", dict)):
        if key in ck and not isinstance(ck[key], want):
            raise InputError(f"{where}: {key!r} must be an object, not "
                             f"{type(ck[key]).__name__}")
    config, state = ck["config"], ck["state_dict"]
    fields = {f.name for f in dataclasses.fields(CONFIGS[kind])}
    unknown = [k for k in config if k not in fields]
    if unknown:
        raise InputError(f"{where}: unknown config key(s) {', '.join(map(repr, unknown))} "
                         f"for a {kind!r} model (known: {', '.join(sorted(fields))})")
    for key, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{where}: state entry {key!r} is a {type(t).__name__}, "
                             "not a tensor")
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise InputError(f"{where}: tensor {key!r} holds NaN or inf: the weights are "
                             "damaged (retrain, or fine-tune from a good checkpoint)")
    _check_data(ck.get("data", {}), where)
    # every size of a config is a dimension of some stored tensor (or, for `layers`, a
    # count of them): a larger one cannot match, and would only build a huge model
    total = sum(t.numel() for t in state.values())
    for key, value in config.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > max(1, total):
            raise InputError(f"{where}: config {key} = {value} does not match the "
                             f"{total} stored weights")
    try:
        with torch.device("meta"):           # shapes only: nothing allocated
            probe = build_model(kind, **config)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: bad config: {exc}") from None
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    missing = [k for k in want if k not in state]
    if missing:
        raise InputError(f"{where}: state tensors missing: {_few(missing)}")
    unexpected = [k for k in state if k not in want]
    if unexpected:
        raise InputError(f"{where}: unexpected state tensors {_few(unexpected)} for its "
                         "config")
    for key, shape in want.items():
        if tuple(state[key].shape) != shape:
            raise InputError(f"{where}: tensor {key!r} has shape "
                             f"{tuple(state[key].shape)}, the config needs {shape}")
    return build_model(kind, **config)


def _check_data(data: dict, where: str) -> None:
    """The data source entry `load_data` reads."""
    if data.get("source") == "csv":
        if not isinstance(data.get("path"), str):
            raise InputError(f"{where}: the CSV data source has no path")
        cols = data.get("columns")
        if cols is not None and not (isinstance(cols, list) and
                                     all(isinstance(c, str) for c in cols)):
            raise InputError(f"{where}: the CSV data source's columns {cols!r} are not "
                             "a list of names")
        if not isinstance(data.get("date_column"), (str, type(None))):
            raise InputError(f"{where}: the CSV data source's date column "
                             f"{data['date_column']!r} is not a name")


def _few(names: list[str], n: int = 4) -> str:
    shown = ", ".join(map(repr, names[:n]))
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
