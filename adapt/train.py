"""The one training loop: float32, fixed precision, AdaPT and MuPPET differ only in their policy.

:func:`run` takes an :class:`~adapt.config.ExperimentConfig` and returns its run
record (:mod:`adapt.records`).  What it does, in the order of the official codes
(docs/method.md §1.4, §1.6, §2.3):

* SGD with momentum and weight decay (on the FP32 masters when quantized), an
  optional L1 term ``l1_decay * sum |p|`` added to the cross-entropy, gradient
  accumulation (the loss of each micro-batch divided by ``accumulation_steps``;
  one optimizer step per group; a trailing partial group at the end of an epoch
  is stepped too), ReduceLROnPlateau on the validation loss (the training loss
  when there is no validation split) or step decay, both stepped once per epoch;
* per epoch: train loss/top-1, validation and test loss/top-1, the learning rate,
  the policy's own fields; the epoch's new entry and trace points appended to the
  run's journal, then a checkpoint (the state without the history, which the journal
  holds) and the record without its traces, both written atomically; the record with
  everything once at the end (docs/results-format.md §1);
* a non-finite loss ends the run with status ``diverged`` (the record is kept);
* ``resume=True`` continues from the last checkpoint and ends with exactly the
  metrics of an uninterrupted run on CPU (the data order and augmentation are a
  function of (seed, epoch); every generator state is checkpointed);
* on CPU, freed memory is kept in the process (:func:`adapt.cpu_memory.keep_freed_memory`;
  ``ADAPT_KEEP_CPU_MEMORY=0`` turns it off): the same results, fewer page faults.
"""
from __future__ import annotations

import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from adapt.config import ExperimentConfig
from adapt.cpu_memory import keep_freed_memory
from adapt.layers import QuantizedModel
from adapt.policies import FixedPrecisionPolicy, Float32Policy, PrecisionPolicy
from adapt.records import (JOURNAL, SCHEMA, JournalError, RecordError, TraceJournal, atomic_save, atomic_write_json, environment_info, load_record, read_record, set_aside, write_running_record)

__all__ = ["run", "make_policy", "pick_device", "evaluate", "prepare_data", "build", "optimizer_step", "l1_penalty",
           "L1Gradient", "CheckpointError"]

FINISHED = ("completed", "diverged")


class CheckpointError(RuntimeError):
    """A ``checkpoint.pt`` that cannot be loaded; it has been set aside (``checkpoint.pt.corrupt``)."""


def pick_device(device=None) -> torch.device:
    """``device`` if given, else ``$ADAPT_DEVICE``, else cuda, then mps, then cpu."""
    device = device or os.environ.get("ADAPT_DEVICE")
    if device:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_policy(config: ExperimentConfig) -> PrecisionPolicy:
    """The precision policy of ``config.method``, built from ``config.policy``."""
    if config.method == "float32":
        return Float32Policy()
    if config.method == "fixed":
        return FixedPrecisionPolicy(**config.policy)
    if config.method == "adapt":
        from adapt.heuristic import AdaptPolicy

        return AdaptPolicy.from_config(config)
    if config.method == "muppet":
        from adapt.muppet import MuppetPolicy

        return MuppetPolicy.from_config(config)
    raise ValueError(f"unknown method {config.method!r}")


def prepare_data(config: ExperimentConfig, device):
    """(train, val or None, test) ImageDatasets on ``device``, split by the config's protocol."""
    from adapt.data.datasets import load_dataset
    from adapt.data.splits import make_splits

    train_full, test = load_dataset(config.dataset, subset=config.subset, test_subset=config.test_subset,
                                    seed=config.seed)
    train, val = make_splits(train_full, config.protocol, fold=config.fold, n_splits=config.n_folds,
                             val_fraction=config.val_fraction, seed=config.seed)
    return (train.to(device), None if val is None else val.to(device), test.to(device), len(train_full.classes))


def build(config: ExperimentConfig, num_classes: int, device):
    """Model, policy, optional QuantizedModel and optimizer for ``config``, in their initial state."""
    from adapt.models import build_model

    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes, config.init).to(device)
    policy = make_policy(config)
    qmodel = None
    if policy.quantized:
        generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        qmodel = QuantizedModel(model, rounding=config.rounding, generator=generator)
    policy.setup(model, qmodel, config)
    params = qmodel.master_parameters() if qmodel is not None else list(model.parameters())
    optimizer = policy.make_optimizer(params, config)
    return model, policy, qmodel, optimizer


@torch.no_grad()
def evaluate(model, dataset, batch_size: int) -> tuple:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``dataset`` (no augmentation)."""
    from adapt.data.loader import DeviceLoader

    if dataset is None:
        return None, None
    was_training = model.training
    model.eval()
    # Summed on the device and read once: float64 additions of the float32 batch sums in batch
    # order, the same IEEE operations as the Python float sum they replace (bit-identical).
    loss_sum, correct, n = None, None, 0
    for x, y in DeviceLoader(dataset, batch_size, shuffle=False, augment=False):
        out = model(x)
        batch_loss = F.cross_entropy(out, y, reduction="sum").double()
        batch_correct = (out.argmax(1) == y).sum()
        if loss_sum is None:  # 0.0 + the first sum, as the Python sum did
            loss_sum, correct = torch.zeros_like(batch_loss), torch.zeros_like(batch_correct)
        loss_sum.add_(batch_loss)
        correct.add_(batch_correct)
        n += len(y)
    model.train(was_training)
    loss_sum, correct = torch.stack([loss_sum, correct.double()]).tolist() if n else (0.0, 0)
    return loss_sum / n, int(correct) / n


class _StepDecay:
    """lr = base_lr * gamma ** (number of milestones <= epoch); state is plain numbers."""

    def __init__(self, optimizer, milestones, gamma):
        self.optimizer, self.milestones, self.gamma = optimizer, tuple(milestones), gamma
        self.base = [g["lr"] for g in optimizer.param_groups]

    def set_epoch(self, epoch: int) -> None:
        k = sum(1 for m in self.milestones if m <= epoch)
        for g, base in zip(self.optimizer.param_groups, self.base):
            g["lr"] = base * self.gamma ** k

    def state_dict(self):
        return {"base": self.base}

    def load_state_dict(self, state):
        self.base = list(state["base"])


def l1_penalty(model) -> torch.Tensor:
    """Sum of absolute parameter values: the loop's L1 term is ``config.l1_decay`` times this."""
    return sum(p.abs().sum() for p in model.parameters())


class L1Gradient:
    """The loop's L1 term ``l1_decay * l1_penalty(model)`` as a gradient term, not as a graph built every micro-batch.

    Bit-identical to adding the term to every micro-batch's loss, as the loop did before:

    * the parameters do not change within an optimizer step, so the penalty's value is the
      same for all its micro-batches: :meth:`begin_step` computes ``l1_decay * l1_penalty``
      once, under ``no_grad``, with the same ops (the loss is ``ce + value``);
    * autograd gave every parameter ``sign(p) * c`` with ``c`` the gradient reaching
      ``l1_penalty`` (``float32(1/accumulation_steps)`` times ``l1_decay``, rounded as
      autograd rounds it: :meth:`__init__` takes it from autograd itself), summed with the
      cross-entropy gradient of the same micro-batch *before* accumulating into ``p.grad``.
      A hook on each parameter adds ``sign(p) * c`` (two multi-tensor ops per step) to the
      incoming gradient at exactly that point;
    * a parameter that gets no cross-entropy gradient in a step would have received only the
      L1 term: :meth:`end_step` gives it that (accumulated once per micro-batch).

    Call :meth:`remove` when done.
    """

    def __init__(self, model, l1_decay: float, accumulation_steps: int):
        self.model = model
        self.l1_decay = l1_decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = self.params[0].device if self.params else torch.device("cpu")
        probe = torch.ones((), device=device, requires_grad=True)
        # The graph the loop used to build, reduced to one parameter of value 1: (ce + l1 * |p|) / accum.
        ((l1_decay * probe.abs().sum()) / accumulation_steps).backward()
        self.coefficient = probe.grad.detach()
        self._term = None
        self._handles = [p.register_hook(self._hook(k)) for k, p in enumerate(self.params)]

    def _hook(self, k: int):
        def add_l1(grad):
            return grad + self._term[k]
        return add_l1

    @torch.no_grad()
    def begin_step(self) -> torch.Tensor:
        """The penalty's value ``l1_decay * l1_penalty(model)`` for this step; sets the gradient term.

        On CUDA the sum of ``|p|`` is one multi-tensor reduction (``torch._foreach_norm(params, 1)``)
        instead of three launches per parameter; its float32 sums are added in another order than
        :func:`l1_penalty`'s, so the value may differ in the last bits (CPU: :func:`l1_penalty` itself).
        """
        self._term = torch._foreach_mul(torch._foreach_sign(self.params), self.coefficient)
        params = list(self.model.parameters())
        if params and params[0].is_cuda and all(p.device == params[0].device for p in params):
            return self.l1_decay * torch.stack(torch._foreach_norm(params, 1)).sum()
        return self.l1_decay * l1_penalty(self.model)

    @torch.no_grad()
    def end_step(self, micro_batches: int) -> None:
        """Give a parameter that received no gradient this step the L1 term of each micro-batch."""
        for p, term in zip(self.params, self._term):
            if p.grad is None:
                g = term.clone()
                for _ in range(micro_batches - 1):
                    g += term
                p.grad = g

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def optimizer_step(policy: PrecisionPolicy, optimizer, qmodel, step: int, loss_value: float) -> None:
    """One optimizer step in the loop's order (docs/method.md §1.3, §1.4, §2.3).

    Quantize the weight gradients, let the policy act on them (``before_step``), hand
    them to the FP32 masters, step the masters, write the re-quantized weights into
    the working parameters, then ``after_step``.  ``qmodel`` is None for float32.
    """
    if qmodel is not None:
        qmodel.quantize_grads()
    policy.before_step(step, loss_value)
    if qmodel is not None:
        qmodel.share_grads()
    optimizer.step()
    if qmodel is not None:
        qmodel.quantize_weights()
    policy.after_step(step)


def run(config: ExperimentConfig, out_dir=None, resume: bool = True, progress=False, device=None,
        epoch_limit: Optional[int] = None, force: bool = False, run_info: Optional[dict] = None) -> dict:
    """Train ``config`` and return its run record.

    ``out_dir`` (optional) receives ``record.json`` after every epoch and
    ``checkpoint.pt``; a finished record there is returned as is unless ``force``;
    with ``resume`` an interrupted run continues from its checkpoint.
    ``epoch_limit`` stops after that many epochs *in this call* (status
    ``interrupted``, checkpoint kept): what a killed job leaves behind.
    ``progress``: ``True`` prints a line at the start, per epoch and at the end
    (:class:`adapt.progress.ProgressPrinter`); a ``ProgressPrinter`` is used as given.
    ``run_info``: extra top-level record fields (the grid's ``run_id`` and ``overrides``).

    An exception inside training is recorded (status ``failed`` with the error
    message) before it propagates.  A record that is not valid JSON is set aside
    (``record.json.corrupt``) and the run recomputed; a checkpoint that cannot be
    loaded is set aside (``checkpoint.pt.corrupt``), the existing record keeps its
    epochs and says ``failed``, and :class:`CheckpointError` says what to do.
    """
    state = {}
    try:
        return _run(config, out_dir, resume, progress, device, epoch_limit, force, state, run_info or {})
    except Exception as exc:
        record = state.get("record")
        if record is not None and state.get("record_path") is not None:
            record["status"] = "failed"
            record["message"] = f"{type(exc).__name__}: {exc}"
            record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            atomic_write_json(state["record_path"], record)
        if state.get("progress") is not None:
            state["progress"].end("failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise


def _load_checkpoint(ckpt_path: Path, record_path: Optional[Path], config: ExperimentConfig, device) -> tuple:
    """``(checkpoint, journal, snapshot)``; on files that cannot be read, set them aside and raise :class:`CheckpointError`.

    ``snapshot`` is the journal's ``{"epochs", "traces"}`` at the checkpoint (the journal is cut
    to it), or ``None`` for a checkpoint written before the journal, which holds its epochs and
    the policy's whole state itself; ``journal`` then starts empty.  A journal that does not hold
    what the checkpoint refers to makes the checkpoint useless: both are set aside.  The record
    beside them keeps its epochs: it is only marked ``failed`` with the message.
    """
    journal_path = ckpt_path.with_name(JOURNAL)
    journal_bad = False
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict) or not {"config", "epoch", "model"} <= set(ckpt) or not (
                "journal" in ckpt or "epochs" in ckpt):
            raise ValueError(f"not an adapt checkpoint (keys: {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__})")
        if "journal" in ckpt:
            journal_bad = True
            journal, snapshot = TraceJournal.resume(journal_path, ckpt["journal"])
            journal_bad = False
        else:
            journal, snapshot = TraceJournal.start(journal_path), None
    except Exception as exc:
        kept = set_aside(ckpt_path)
        also = ""
        if journal_bad and journal_path.exists():
            also = f" (with its journal, set aside as {set_aside(journal_path).name})"
        previous = None
        if record_path is not None and record_path.exists():
            try:
                previous = load_record(record_path)
            except JournalError:  # its traces were in that journal: keep what the record holds
                previous = load_record(record_path, traces=False)
                previous.pop("journal", None)
            except RecordError:
                previous = read_record(record_path)  # sets it aside
        epochs = len(previous["epochs"]) if previous else 0
        message = (f"checkpoint {ckpt_path} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                   f"it was set aside as {kept.name}{also}. The record keeps its {epochs} epoch(s) of history. "
                   f"Rerun the point to restart it from scratch (the old record is then kept as "
                   f"record.json.previous), or --force / force=True to do the same; delete {kept.name} "
                   f"once you no longer need it.")
        if previous is not None:
            previous.update(status="failed", message=message,
                            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            atomic_write_json(record_path, previous)
        raise CheckpointError(message) from exc
    if ckpt["config"] != config.to_dict():
        raise ValueError(f"{ckpt_path} belongs to a different config; use another out_dir or force=True")
    return ckpt, journal, snapshot


def _run(config, out_dir, resume, progress, device, epoch_limit, force, state, run_info) -> dict:
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    out_dir = Path(out_dir) if out_dir is not None else None
    record_path = out_dir / "record.json" if out_dir else None
    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    if record_path is not None and resume and not force:
        existing = read_record(record_path)  # a bad file is set aside and recomputed
        if existing is not None:
            if existing["config"] != config.to_dict():
                raise ValueError(f"{record_path} holds a run of a different config; use another out_dir or force=True")
            if existing["status"] in FINISHED:
                return existing

    device = pick_device(device)
    if device.type == "cpu":  # page faults were up to half of a CPU step (adapt/cpu_memory.py)
        keep_freed_memory()
    started = time.time()
    train_ds, val_ds, test_ds, num_classes = prepare_data(config, device)
    model, policy, qmodel, optimizer = build(config, num_classes, device)
    scheduler = None
    if not policy.controls_lr:
        if config.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
                threshold=config.plateau_threshold)
        elif config.scheduler == "step":
            scheduler = _StepDecay(optimizer, config.step_milestones, config.step_gamma)

    from adapt.data.loader import DeviceLoader

    loader = DeviceLoader(train_ds, config.batch_size, shuffle=True, augment=config.augment,
                          seed=config.seed)
    ckpt, journal, snapshot = None, None, None
    if ckpt_path is not None and ckpt_path.exists() and resume and not force:
        ckpt, journal, snapshot = _load_checkpoint(ckpt_path, record_path, config, device)
    elif ckpt_path is not None:
        journal = TraceJournal.start(ckpt_path.with_name(JOURNAL))
    record = {
        "schema": SCHEMA, "name": config.name, **run_info, "status": "running", "config": config.to_dict(),
        "environment": environment_info(device), "epochs": [], "traces": {}, "final": {}, "policy": {},
        "wall_time_s": 0.0, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": None, "message": "",
    }
    start_epoch, step, elapsed_before = 0, 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if qmodel is not None:
            qmodel.load_state_dict(ckpt["qmodel"])
            qmodel.generator.set_state(ckpt["qgenerator"].cpu())
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if snapshot is None:  # a checkpoint written before the journal: it holds the whole history
            policy.load_state_dict(ckpt["policy"])
            record["epochs"] = ckpt["epochs"]
        else:
            policy.load_checkpoint_state(ckpt["policy"], snapshot.get("traces", {}))
            record["epochs"] = snapshot.get("epochs", [])
        record["traces"] = policy.traces()
        torch.set_rng_state(ckpt["rng"].cpu())
        record["started"] = ckpt["started"]
        start_epoch, step, elapsed_before = ckpt["epoch"] + 1, ckpt["step"], ckpt["elapsed"]
    state.update(record=record, record_path=record_path)

    accum = config.accumulation_steps
    l1 = L1Gradient(model, config.l1_decay, accum) if config.l1_decay else None
    status, message = "completed", ""
    epochs_this_call = 0
    reporter = None
    if progress:
        from adapt.progress import ProgressPrinter

        reporter = progress if isinstance(progress, ProgressPrinter) else ProgressPrinter(
            run_info.get("run_id") or config.name, open_ended=policy.controls_lr)
        reporter.start(start_epoch, config.epochs, device, out_dir)
        state["progress"] = reporter
    for epoch in range(start_epoch, config.epochs):
        if epoch_limit is not None and epochs_this_call >= epoch_limit:
            status, message = "interrupted", f"stopped after {epoch_limit} epoch(s) by epoch_limit"
            break
        t0 = time.time()
        if isinstance(scheduler, _StepDecay):
            scheduler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        loader.set_epoch(epoch)
        n_batches = len(loader)
        loss_sum, correct, seen = 0.0, None, 0
        diverged = False
        group = []  # (batch index, loss, batch size) of this optimizer step's micro-batches
        for i, (x, y) in enumerate(loader):
            if i % accum == 0:
                model.zero_grad(set_to_none=True)
                l1_value = l1.begin_step() if l1 is not None else None
            out = model(x)
            loss = F.cross_entropy(out, y)
            if l1_value is not None:
                loss = loss + l1_value
            (loss / accum).backward()
            group.append((i, loss.detach(), len(y)))
            batch_correct = (out.detach().argmax(1) == y).sum()
            correct = batch_correct if correct is None else correct.add_(batch_correct)
            if (i + 1) % accum == 0 or i + 1 == n_batches:
                # The step's one host transfer: every micro-batch's loss (the finiteness check, the
                # running sum in batch order, and the last one for the policy, as before).
                values = torch.stack([loss_k for _, loss_k, _ in group]).tolist()
                bad = next((k for k, v in enumerate(values) if not math.isfinite(v)), None)
                if bad is not None:
                    diverged = True
                    message = f"non-finite training loss {values[bad]} at epoch {epoch}, batch {group[bad][0]}"
                    break
                for v, (_, _, size) in zip(values, group):
                    loss_sum += v * size
                    seen += size
                if l1 is not None:
                    l1.end_step(len(group))
                group = []
                policy.epoch_float = epoch + (i + 1) / n_batches
                optimizer_step(policy, optimizer, qmodel, step, values[-1] / accum)
                step += 1
        correct = int(correct) if correct is not None else 0
        if diverged:
            status = "diverged"
            record["epochs"].append({"epoch": epoch, "lr": lr, "train_loss": float("nan")})
            break
        val_loss, val_acc = evaluate(model, val_ds, config.eval_batch_size)
        test_loss, test_acc = evaluate(model, test_ds, config.eval_batch_size)
        metrics = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                   "steps": step}
        stop = policy.end_epoch(epoch, metrics, optimizer)
        metrics.update(policy.epoch_log())
        metrics["time_s"] = time.time() - t0
        record["epochs"].append(metrics)
        epochs_this_call += 1
        if not all(math.isfinite(v) for v in (test_loss, val_loss if val_loss is not None else 0.0)):
            status, message = "diverged", f"non-finite evaluation loss at epoch {epoch}"
            break
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss if val_loss is not None else metrics["train_loss"])
        if ckpt_path is not None:
            # Journal first, then the checkpoint that commits its new line, then the record: a crash
            # in between leaves a line that nothing refers to, cut off on resume (adapt.records).
            journal.append({"epochs": record["epochs"], "traces": policy.traces()})
            atomic_save({
                "config": config.to_dict(), "epoch": epoch, "step": step, "started": record["started"],
                "elapsed": elapsed_before + time.time() - started,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "qmodel": qmodel.state_dict() if qmodel is not None else None,
                "qgenerator": qmodel.generator.get_state() if qmodel is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "policy": policy.checkpoint_state(), "rng": torch.get_rng_state(), "journal": journal.pointer(),
            }, ckpt_path)
        if record_path is not None:
            _finish(record, policy, "running", "", elapsed_before + time.time() - started)
            write_running_record(record_path, record, journal)
        if reporter is not None:
            reporter.epoch(metrics, config.epochs, metrics["time_s"])
        if stop:
            message = "stopped by the precision policy"
            break
    if l1 is not None:
        l1.remove()
    _finish(record, policy, status, message, elapsed_before + time.time() - started)
    if record_path is not None:
        atomic_write_json(record_path, record)
        if status in FINISHED and journal is not None:
            journal.remove()  # the record now holds all of it, and a finished run is never resumed
    if reporter is not None:
        reporter.end(status, message if status != "completed" else "", record["final"])
    state.pop("progress", None)
    return record


def _finish(record: dict, policy, status: str, message: str, wall: float) -> None:
    epochs = [e for e in record["epochs"] if e.get("test_acc") is not None]
    final = {"epochs_run": len(record["epochs"])}
    if epochs:
        last = epochs[-1]
        best_val = max(epochs, key=lambda e: (e["val_acc"] if e["val_acc"] is not None else -1.0, -e["epoch"]))
        final.update({
            "final_test_acc": last["test_acc"], "final_val_acc": last["val_acc"], "final_train_loss": last["train_loss"],
            "best_test_acc": max(e["test_acc"] for e in epochs),
            "test_acc_at_best_val": best_val["test_acc"] if best_val["val_acc"] is not None else None,
            "steps": last["steps"],
        })
    record["final"] = final
    record["traces"] = policy.traces()
    record["policy"] = policy.summary()
    record["status"] = status
    record["message"] = message
    record["wall_time_s"] = wall
    if status != "running":
        record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
