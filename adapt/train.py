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
import re
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from adapt.config import ExperimentConfig
from adapt.cpu_memory import keep_freed_memory
from adapt.data.datasets import load_dataset
from adapt.data.loader import DeviceLoader
from adapt.data.splits import make_splits
from adapt.layers import QuantizedModel
from adapt.methods import make_policy
from adapt.models import build_model
from adapt.policies import PrecisionPolicy
from adapt.progress import ProgressPrinter
from adapt.records import (CHECKPOINT, COMPLETED, DIVERGED, FAILED, FINISHED, INTERRUPTED, JOURNAL, RECORD, RUNNING,
                           SCHEMA, JournalError, RecordError, TraceJournal, atomic_save, atomic_write_json,
                           environment_info, load_record, read_record, run_state, set_aside, utc_now,
                           write_running_record)

__all__ = ["run", "Training", "pick_device", "evaluate", "prepare_data", "build", "optimizer_step", "l1_penalty",
           "L1Gradient", "CheckpointError", "save_checkpoint", "load_checkpoint"]


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


def prepare_data(config: ExperimentConfig, device):
    """(train, val or None, test) ImageDatasets on ``device``, split by the config's protocol."""
    train_full, test = load_dataset(config.dataset, subset=config.subset, test_subset=config.test_subset,
                                    seed=config.seed)
    train, val = make_splits(train_full, config.protocol, fold=config.fold, n_splits=config.n_folds,
                             val_fraction=config.val_fraction, seed=config.seed)
    return (train.to(device), None if val is None else val.to(device), test.to(device), len(train_full.classes))


def build(config: ExperimentConfig, num_classes: int, device, policy: Optional[PrecisionPolicy] = None):
    """Model, policy, optional QuantizedModel and optimizer for ``config``, in their initial state.

    ``policy``: a policy object to use instead of the registered method's (:func:`adapt.methods.make_policy`).
    """
    torch.manual_seed(config.seed)
    # The released model and layer quirks (docs/method.md §1.10): the LeNet-5's softmax output
    # (the loop's cross-entropy then applies the released second softmax) and the layers'
    # in-place input quantization.
    model = build_model(config.model, num_classes, config.init, softmax_output=config.softmax_output).to(device)
    policy = make_policy(config) if policy is None else policy
    qmodel = None
    if policy.quantized:
        generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        qmodel = QuantizedModel(model, rounding=config.rounding, generator=generator,
                                in_place_inputs=config.in_place_inputs)
    policy.setup(model, qmodel, config)
    params = qmodel.master_parameters() if qmodel is not None else list(model.parameters())
    optimizer = policy.make_optimizer(params, config)
    return model, policy, qmodel, optimizer


@torch.no_grad()
def evaluate(model, dataset, batch_size: int) -> tuple:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``dataset`` (no augmentation)."""
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


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, training: "Training", epoch: int, elapsed: float) -> None:
    """Everything needed to continue after ``epoch``, but the history (the run's journal holds it)."""
    t = training
    atomic_save({
        "config": t.config.to_dict(), "epoch": epoch, "step": t.step, "started": t.record["started"],
        "elapsed": elapsed, "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
        "qmodel": t.qmodel.state_dict() if t.qmodel is not None else None,
        "qgenerator": t.qmodel.generator.get_state() if t.qmodel is not None else None,
        "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
        "policy": t.policy.checkpoint_state(), "rng": torch.get_rng_state(), "journal": t.journal.pointer(),
    }, path)


def load_checkpoint(ckpt_path: Path, record_path: Optional[Path], config: ExperimentConfig, device) -> tuple:
    """``(checkpoint, journal, snapshot)``; on files that cannot be used, set them aside and raise :class:`CheckpointError`.

    ``snapshot`` is the journal's ``{"epochs", "traces"}`` at the checkpoint (the journal is cut
    to it), or ``None`` for a checkpoint written before the journal, which holds its epochs and
    the policy's whole state itself; ``journal`` then starts empty.

    A checkpoint that torch cannot load (or that is not one adapt wrote) is set aside as
    ``checkpoint.pt.corrupt``.  A checkpoint that loads but whose journal does not hold the history
    it refers to (missing, truncated, edited) is not corrupt, but the run cannot continue from it
    exactly: it is kept as ``checkpoint.pt.previous`` and the journal set aside.  Either way the
    record beside them keeps its epochs and is marked ``failed`` with a message that says what is
    left; the next run starts afresh.
    """
    journal_path = ckpt_path.with_name(JOURNAL)
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict) or not {"config", "epoch", "model"} <= set(ckpt) or not (
                "journal" in ckpt or "epochs" in ckpt):
            raise ValueError(f"not an adapt checkpoint (keys: {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__})")
    except Exception as exc:
        kept = set_aside(ckpt_path)
        _checkpoint_failed(f"checkpoint {ckpt_path} cannot be loaded ({_load_problem(exc)}); it was set aside as "
                           f"{kept.name}", record_path, kept, exc)
    if "journal" in ckpt:
        try:
            journal, snapshot = TraceJournal.resume(journal_path, ckpt["journal"])
        except (RecordError, OSError) as exc:
            kept = set_aside(ckpt_path, ".previous")
            also = f", and the journal as {set_aside(journal_path).name}" if journal_path.exists() else ""
            problem = exc.problem if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
            _checkpoint_failed(
                f"checkpoint {ckpt_path} (after epoch {int(ckpt['epoch']) + 1}) loads, but {JOURNAL}, which holds "
                f"the epochs and traces up to it, does not ({problem}): the run cannot continue from it exactly. "
                f"The checkpoint was kept as {kept.name}{also}", record_path, kept, exc)
    else:
        journal, snapshot = TraceJournal.start(journal_path), None
    if ckpt["config"] != config.to_dict():
        raise ValueError(f"{ckpt_path} belongs to a different config; use another out_dir or force=True")
    return ckpt, journal, snapshot


def _load_problem(exc: BaseException) -> str:
    """Why torch could not load a checkpoint, in one line, without torch's advice to load it with
    ``weights_only=False`` (which runs whatever code a file of unknown origin holds)."""
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (f"it holds a {unsupported.group(1)} object, which no checkpoint adapt writes holds, and "
                f"torch.load(weights_only=True) refuses it; do not load a file of unknown origin with weights_only=False")
    if "Weights only load failed" in text:
        return ("torch.load(weights_only=True) refuses it: it is not a checkpoint adapt wrote; do not load a file "
                "of unknown origin with weights_only=False")
    lines = text.strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _checkpoint_failed(what: str, record_path: Optional[Path], kept: Path, exc: BaseException) -> None:
    """Mark the record beside an unusable checkpoint ``failed`` with a message saying what is left; raise."""
    previous = None
    if record_path is not None and record_path.exists():
        try:
            previous = load_record(record_path)
        except JournalError:  # its traces were in the journal: keep what the record holds
            previous = load_record(record_path, traces=False)
            previous.pop("journal", None)
        except RecordError:
            previous = read_record(record_path)  # sets it aside
    if previous is not None:
        left = (f"The record keeps its {len(previous.get('epochs') or [])} epoch(s) of history and says failed. "
                f"Rerun the point, or --force / force=True, to retrain it from scratch (this record is then kept "
                f"as record.json.previous)")
    else:
        corrupt = record_path is not None and record_path.with_name(RECORD + ".corrupt").exists()
        left = ("No record is left" + (f" (the unreadable one is {RECORD}.corrupt)" if corrupt else "")
                + ". Rerun the point, or --force / force=True, to retrain it from scratch")
    message = f"{what}. {left}; delete {kept.name} once you no longer need it."
    if previous is not None:
        previous.update(status=FAILED, message=message, finished=utc_now())
        atomic_write_json(record_path, previous)
    raise CheckpointError(message) from exc


# ----------------------------------------------------------------------------- one run
class Training:
    """One run in progress: what :func:`run` builds, and the steps it takes in order.

    ``Training(config, device, out_dir, run_info, policy)`` loads the data and builds the model,
    policy, optimizer, scheduler and loader in their initial state (the order fixes the random
    numbers each draws); :meth:`restore` continues from a checkpoint; then per epoch
    :meth:`train_epoch`, :meth:`end_epoch` and :meth:`save`; at the end :meth:`finish`, or
    :meth:`record_failure` when an exception stops the run.
    """

    def __init__(self, config: ExperimentConfig, device: torch.device, out_dir: Optional[Path] = None,
                 run_info: Optional[dict] = None, policy: Optional[PrecisionPolicy] = None,
                 journal: Optional[TraceJournal] = None):
        self.config, self.device = config, device
        self.record_path = out_dir / RECORD if out_dir is not None else None
        self.ckpt_path = out_dir / CHECKPOINT if out_dir is not None else None
        self.started = time.time()
        self.train_ds, self.val_ds, self.test_ds, num_classes = prepare_data(config, device)
        self.model, self.policy, self.qmodel, self.optimizer = build(config, num_classes, device, policy)
        self.scheduler = None
        if not self.policy.controls_lr:
            if config.scheduler == "plateau":
                self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                    self.optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
                    threshold=config.plateau_threshold)
            elif config.scheduler == "step":
                self.scheduler = _StepDecay(self.optimizer, config.step_milestones, config.step_gamma)
        self.loader = DeviceLoader(self.train_ds, config.batch_size, shuffle=True, augment=config.augment,
                                   seed=config.seed)
        self.journal = journal
        if journal is None and self.ckpt_path is not None:
            self.journal = TraceJournal.start(self.ckpt_path.with_name(JOURNAL))
        self.record = {
            "schema": SCHEMA, "name": config.name, **(run_info or {}), "status": RUNNING,
            "config": config.to_dict(), "environment": environment_info(device), "epochs": [], "traces": {},
            "final": {}, "policy": {}, "wall_time_s": 0.0, "started": utc_now(), "finished": None, "message": "",
        }
        if policy is not None:
            self.record["policy_class"] = f"{type(policy).__module__}.{type(policy).__qualname__}"
        self.start_epoch, self.step, self.elapsed_before = 0, 0, 0.0
        self.l1 = None
        #: Whether this call has written its record yet: until it has, a finished record that a forced
        #: run replaces stays as it is, also when the forced run fails (:meth:`record_failure`).
        self.written = False

    @classmethod
    def start(cls, config, device, out_dir=None, run_info=None, policy=None, resume: bool = False) -> "Training":
        """A new run, or (``resume``) the run whose checkpoint is in ``out_dir``, continued."""
        if not resume:
            return cls(config, device, out_dir, run_info, policy)
        # The checkpoint is read before the model is built, so that a bad one is set aside (and the
        # record says so) before any work is done.
        ckpt, journal, snapshot = load_checkpoint(out_dir / CHECKPOINT, out_dir / RECORD, config, device)
        training = cls(config, device, out_dir, run_info, policy, journal=journal)
        training.restore(ckpt, snapshot)
        return training

    def restore(self, ckpt: dict, snapshot: Optional[dict]) -> None:
        """The state after the checkpoint's epoch: weights, optimizer, scheduler, policy, generators, history."""
        self.model.load_state_dict(ckpt["model"])
        if self.qmodel is not None:
            self.qmodel.load_state_dict(ckpt["qmodel"])
            self.qmodel.generator.set_state(ckpt["qgenerator"].cpu())
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if snapshot is None:  # a checkpoint written before the journal: it holds the whole history
            self.policy.load_state_dict(ckpt["policy"])
            self.record["epochs"] = ckpt["epochs"]
        else:
            self.policy.load_checkpoint_state(ckpt["policy"], snapshot.get("traces", {}))
            self.record["epochs"] = snapshot.get("epochs", [])
        self.record["traces"] = self.policy.traces()
        torch.set_rng_state(ckpt["rng"].cpu())
        self.record["started"] = ckpt["started"]
        self.start_epoch, self.step, self.elapsed_before = ckpt["epoch"] + 1, ckpt["step"], ckpt["elapsed"]

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def train_epoch(self, epoch: int) -> tuple:
        """One pass over the training data: ``(metrics, "")``, or ``(None, message)`` when the loss is not finite.

        ``metrics`` holds the epoch, its learning rate, the mean training loss and accuracy and the
        optimizer steps so far; a non-finite loss is found at the step that produced it, and the
        record gets an entry with ``train_loss`` NaN.
        """
        config, model, loader, l1 = self.config, self.model, self.loader, self.l1
        accum = config.accumulation_steps
        if isinstance(self.scheduler, _StepDecay):
            self.scheduler.set_epoch(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        model.train()
        loader.set_epoch(epoch)
        n_batches = len(loader)
        loss_sum, correct, seen = 0.0, None, 0
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
                    self.record["epochs"].append({"epoch": epoch, "lr": lr, "train_loss": float("nan")})
                    return None, f"non-finite training loss {values[bad]} at epoch {epoch}, batch {group[bad][0]}"
                for v, (_, _, size) in zip(values, group):
                    loss_sum += v * size
                    seen += size
                if l1 is not None:
                    l1.end_step(len(group))
                group = []
                self.policy.epoch_float = epoch + (i + 1) / n_batches
                optimizer_step(self.policy, self.optimizer, self.qmodel, self.step, values[-1] / accum)
                self.step += 1
        correct = int(correct) if correct is not None else 0
        return {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen}, ""

    def end_epoch(self, metrics: dict, t0: float) -> tuple:
        """Evaluate, let the policy act, step the plateau scheduler: ``(stop, status, message)``.

        ``status`` is ``DIVERGED`` when an evaluation loss is not finite (the epoch is recorded,
        nothing is saved), else ``None``; ``stop`` says the policy ended training.
        """
        config = self.config
        val_loss, val_acc = evaluate(self.model, self.val_ds, config.eval_batch_size)
        test_loss, test_acc = evaluate(self.model, self.test_ds, config.eval_batch_size)
        metrics.update({"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                        "steps": self.step})
        stop = self.policy.end_epoch(metrics["epoch"], metrics, self.optimizer)
        metrics.update(self.policy.epoch_log())
        metrics["time_s"] = time.time() - t0
        self.record["epochs"].append(metrics)
        if not all(math.isfinite(v) for v in (test_loss, val_loss if val_loss is not None else 0.0)):
            return stop, DIVERGED, f"non-finite evaluation loss at epoch {metrics['epoch']}"
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss if val_loss is not None else metrics["train_loss"])
        return stop, None, ""

    def save(self, epoch: int) -> None:
        """After an epoch: the journal's new line, the checkpoint that commits it, the record."""
        if self.ckpt_path is not None:
            self._keep_journal(epoch)
            # Journal first, then the checkpoint that commits its new line, then the record: a crash
            # in between leaves a line that nothing refers to, cut off on resume (adapt.records).
            self.journal.append({"epochs": self.record["epochs"], "traces": self.policy.traces()})
            save_checkpoint(self.ckpt_path, self, epoch, self.elapsed())
        if self.record_path is not None:
            self._summarize(RUNNING, "")
            write_running_record(self.record_path, self.record, self.journal)
            self.written = True

    def _keep_journal(self, epoch: int) -> None:
        """A journal deleted or replaced while the run trains is written again, whole, from memory (the run
        holds every epoch and trace point it logged), so the epoch is kept and the checkpoint refers to it."""
        if self.journal is not None and not self.journal.intact():
            warnings.warn(f"{self.journal.path} was deleted or changed while the run trained (before epoch "
                          f"{epoch + 1} was saved): written again from the run's memory, nothing is lost",
                          RuntimeWarning, stacklevel=3)
            self.journal.restart()

    def finish(self, status: str, message: str) -> dict:
        """The final record, written whole; a finished run's journal then gets its last line, which holds the
        rest of the record (:meth:`adapt.records.TraceJournal.finish`): the record can be rebuilt from it."""
        self._summarize(status, message)
        if self.record_path is not None:
            atomic_write_json(self.record_path, self.record)
            self.written = True
            if status in FINISHED and self.journal is not None:
                if not self.journal.intact():
                    self.journal.restart()
                self.journal.finish(self.record)
        return self.record

    def record_failure(self, exc: BaseException) -> None:
        """The record says ``failed`` with the exception's message (its epochs so far kept).

        Until this call has written its record, a finished record (or one of another config) that a
        forced run was to replace is left as it is: a forced run that fails before it has trained an
        epoch loses nothing (the finished result is worth more than a record of the failure, which
        the exception reports anyway).  ``final`` is recomputed from the epochs the record keeps.
        """
        if self.record_path is None:
            return
        if not self.written and run_state(self.record_path.parent, self.config.to_dict()).kind in (
                "finished", "stale", "rebuildable"):
            return
        self.record.update(status=FAILED, message=f"{type(exc).__name__}: {exc}", finished=utc_now(),
                           final=_final_stats(self.record["epochs"]))
        atomic_write_json(self.record_path, self.record)
        self.written = True

    def _summarize(self, status: str, message: str) -> None:
        record = self.record
        record.update(final=_final_stats(record["epochs"]), traces=self.policy.traces(),
                      policy=self.policy.summary(), status=status, message=message, wall_time_s=self.elapsed())
        if status != RUNNING:
            record["finished"] = utc_now()


def _final_stats(all_epochs: list) -> dict:
    """The record's ``final``: how many epochs ran and the statistics of the last evaluated one."""
    epochs = [e for e in all_epochs if e.get("test_acc") is not None]
    final = {"epochs_run": len(all_epochs)}
    if epochs:
        last = epochs[-1]
        best_val = max(epochs, key=lambda e: (e["val_acc"] if e["val_acc"] is not None else -1.0, -e["epoch"]))
        final.update({
            "final_test_acc": last["test_acc"], "final_val_acc": last["val_acc"],
            "final_train_loss": last["train_loss"], "best_test_acc": max(e["test_acc"] for e in epochs),
            "test_acc_at_best_val": best_val["test_acc"] if best_val["val_acc"] is not None else None,
            "steps": last["steps"],
        })
    return final


# ----------------------------------------------------------------------------- the loop
def run(config: ExperimentConfig, out_dir=None, resume: bool = True, progress=False, device=None,
        epoch_limit: Optional[int] = None, force: bool = False, run_info: Optional[dict] = None,
        policy: Optional[PrecisionPolicy] = None) -> dict:
    """Train ``config`` and return its run record.

    ``out_dir`` (optional) receives ``record.json`` after every epoch and ``checkpoint.pt``.  What is
    done with what the folder already holds is :func:`adapt.records.run_state`'s answer: a finished
    record of this config is returned as is (``force`` retrains), a record of another config is an
    error (``force`` replaces it), an unfinished run continues from its checkpoint (with ``resume``;
    ``force`` restarts it), and an unfinished record without a checkpoint is kept as
    ``record.json.previous`` while the run starts afresh.  A record that is not valid JSON is set
    aside (``record.json.corrupt``); a finished run's record is then written back from its journal
    (state ``rebuildable``), else the run resumes from its checkpoint.  A checkpoint that cannot be
    used is set aside (:func:`load_checkpoint`), the record keeps its epochs and says ``failed``,
    and :class:`CheckpointError` says what is left and what to do.  A forced run leaves the record
    it replaces as it is until it has trained an epoch (also when it fails before).

    ``epoch_limit`` stops after that many epochs *in this call* (status ``interrupted``, checkpoint
    kept): what a killed job leaves behind.  ``progress``: ``True`` prints a line at the start, per
    epoch and at the end (:class:`adapt.progress.ProgressPrinter`); a ``ProgressPrinter`` is used as
    given.  ``run_info``: extra top-level record fields (the grid's ``run_id`` and ``overrides``).
    ``policy``: a :class:`~adapt.policies.PrecisionPolicy` object to train with instead of the
    registered method's (:mod:`adapt.methods`); the record names its class (``policy_class``).

    An exception inside training is recorded (status ``failed`` with the error message) before it
    propagates.
    """
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    out_dir = Path(out_dir) if out_dir is not None else None
    resume_from_checkpoint = False
    if out_dir is not None:
        state = run_state(out_dir, config.to_dict())
        if state.kind == "corrupt":
            read_record(out_dir / RECORD)  # sets it aside, with a warning naming it and what is left
            state = run_state(out_dir, config.to_dict())
        if state.kind == "rebuildable":  # a finished run whose record.json was lost: its journal holds it
            atomic_write_json(out_dir / RECORD, state.record)
            if progress:
                print(f"[{(run_info or {}).get('run_id') or config.name}] {RECORD} written back from the finished "
                      f"run's {JOURNAL} ({state.status}, {len(state.record.get('epochs') or [])} epochs)", flush=True)
            state = run_state(out_dir, config.to_dict())
        if not force:
            if state.kind == "finished":
                return state.record
            if state.kind == "stale":
                raise ValueError(f"{out_dir / RECORD} holds a run of another config; use another out_dir, or "
                                 f"force=True (adapt run --force) to replace it")
            if state.kind == "restart" and state.record.get("epochs"):
                kept = set_aside(out_dir / RECORD, ".previous")
                if progress:
                    print(f"[{(run_info or {}).get('run_id') or config.name}] no checkpoint to resume from: "
                          f"restarting from scratch (the old record is kept as {kept.name})", flush=True)
            resume_from_checkpoint = resume and state.kind == "resumable"
    device = pick_device(device)
    if device.type == "cpu":  # page faults were up to half of a CPU step (adapt/cpu_memory.py)
        keep_freed_memory()
    training = Training.start(config, device, out_dir, run_info, policy, resume=resume_from_checkpoint)
    reporter = None
    if progress:
        reporter = progress if isinstance(progress, ProgressPrinter) else ProgressPrinter(
            (run_info or {}).get("run_id") or config.name, open_ended=training.policy.controls_lr)
    try:
        if reporter is not None:
            reporter.start(training.start_epoch, config.epochs, device, out_dir)
        status, message = _train(training, epoch_limit, reporter)
    except Exception as exc:
        training.record_failure(exc)
        if reporter is not None:
            reporter.end(FAILED, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    record = training.finish(status, message)
    if reporter is not None:
        reporter.end(status, message if status != COMPLETED else "", record["final"])
    return record


def _train(training: Training, epoch_limit: Optional[int], reporter) -> tuple:
    """The epochs of one call: ``(status, message)`` of how they ended."""
    config = training.config
    training.l1 = L1Gradient(training.model, config.l1_decay, config.accumulation_steps) if config.l1_decay else None
    status, message = COMPLETED, ""
    try:
        for k, epoch in enumerate(range(training.start_epoch, config.epochs)):
            if epoch_limit is not None and k >= epoch_limit:
                return INTERRUPTED, f"stopped after {epoch_limit} epoch(s) by epoch_limit"
            t0 = time.time()
            metrics, message = training.train_epoch(epoch)
            if metrics is None:
                return DIVERGED, message
            stop, diverged, message = training.end_epoch(metrics, t0)
            if diverged:
                return diverged, message
            training.save(epoch)
            if reporter is not None:
                reporter.epoch(metrics, config.epochs, metrics["time_s"])
            if stop:
                return COMPLETED, "stopped by the precision policy"
    finally:
        if training.l1 is not None:
            training.l1.remove()
    return status, message
