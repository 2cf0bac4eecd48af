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
import math
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
        if not isinstance(self.batch, int) or self.batch < 1:
            raise InputError(f"batch must be a positive integer, got {self.batch!r}")
        for f in ("lr", "qat_lr"):
            if not getattr(self, f) > 0:
                raise InputError(f"{f} must be positive, got {getattr(self, f)!r}")


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
    out = predict(model, split.x, mode)
    if model.kind == "ts":
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
    ``path=None`` loads the shipped demo checkpoint of ``kind``."""
    if path is None:
        if kind is None:
            raise InputError("give a checkpoint or a model kind")
        path = demo_checkpoint(kind)
        if not path.is_file():
            raise InputError(f"the demo checkpoint {str(path)!r} is missing; run "
                             "scripts/make_checkpoints.py")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint file {str(path)!r} does not exist")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"checkpoint file {str(path)!r} is not readable: {exc}") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"file {str(path)!r} is not an axsa model checkpoint")
    if kind is not None and ck["kind"] != kind:
        raise InputError(f"checkpoint {str(path)!r} holds a {ck['kind']!r} model, not {kind!r}")
    model = build_model(ck["kind"], **ck["config"])
    model.load_state_dict(ck["state_dict"])
    model.set_mode("fake_quant").eval()
    return model, ck.get("data", {}), ck.get("meta", {})
