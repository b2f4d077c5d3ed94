"""Pictures of a trained model: what its first layer learned, where it goes wrong, how well calibrated it is.

`inspect_run` writes RUN_DIR/inspect/: weights.png, mistakes.png, per_class.png, calibration.png,
summary.json, and a TensorBoard log (the four pictures, and the penultimate layer's activations of 2,000
test images for the projector). The numbers come from fashionmlp.metrics, the figures from
fashionmlp.plots.model. The module is not called `inspect`: a fashionmlp/inspect.py shadows the standard
library's `inspect` whenever fashionmlp/ itself is on sys.path (`python fashionmlp/cli.py` then fails inside
typer).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fashionmlp.data import CLASSES, TensorSplit
from fashionmlp.device import dtype_of
from fashionmlp.engine import predict_proba
from fashionmlp.errors import UserError
from fashionmlp.metrics import confident_mistakes, confused_pairs, confusion_of, per_class_accuracy, reliability
from fashionmlp.models import SmallCNN
from fashionmlp.plots.model import (
    calibration_figure,
    cnn_weights_figure,
    mistakes_figure,
    mlp_weights_figure,
    per_class_figure,
)
from fashionmlp.runlock import LOCK_NAME, lock_run_dir
from fashionmlp.savedrun import load_run, previous_summary, refuse_links, run_test_split
from fashionmlp.tracking import check_folder_writable, save_figure, write_json

DPI = 100


EMBEDDING_IMAGES = 2000  # test images in the projector (the first ones: the test set's classes are balanced)


EMBEDDING_TAG = "penultimate"


MAX_UNITS = 144  # first-layer units drawn (12x12): wider layers show their first 144


FILES = ("weights.png", "mistakes.png", "per_class.png", "calibration.png", "summary.json")


@torch.inference_mode()
def predict_with_features(model: nn.Module, x: torch.Tensor, batch_size: int = 2000, tta: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 28, 28) -> (N, 10) class probabilities and (N, D) penultimate activations, the input of the
    last layer (both networks end with the classifier's Linear). With `tta` the probabilities are averaged
    with the mirrored images' (train.tta: flip); the activations stay the images' own."""
    model.eval()
    last = list(model.modules())[-1]
    if not isinstance(last, nn.Linear):
        raise TypeError(f"expected the model to end with nn.Linear, got {type(last).__name__}")
    captured: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float().cpu()))
    try:
        probs = [torch.softmax(model(x[i:i + batch_size]).float(), dim=1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        hook.remove()
    if tta:
        probs = [predict_proba(model, x, batch_size, tta=True).float().cpu()]
    return torch.cat(probs), torch.cat(captured)


@dataclass
class InspectReport:
    out_dir: Path
    summary: dict
    notes: list[str] = field(default_factory=list)  # e.g. that best.pt was chosen on the test set

    @property
    def text(self) -> str:
        s = self.summary
        worst = min(s["per_class_accuracy"].items(), key=lambda kv: kv[1])
        lines = [f"run {s['run']}  checkpoint {s['checkpoint']}.pt (epoch {s['epoch']})  "
                 f"{s['test_images']} test images",
                 f"test accuracy {s['test_accuracy']:.2%}   expected calibration error "
                 + (f"none ({s['nonfinite_predictions']:,} predictions not finite)" if s["ece"] is None
                    else f"{s['ece']:.2%}") + "   "
                 f"weakest class {worst[0]} ({worst[1]:.1%})"]
        if s["confused_pairs"]:
            p = s["confused_pairs"][0]
            lines.append(f"most confused pair: {p['classes'][0]} / {p['classes'][1]} ({p['total']} test images)")
        lines.append(f"pictures: {', '.join(f for f in FILES if f.endswith('.png'))} and summary.json in "
                     f"{self.out_dir}")
        lines.append(f"TensorBoard (images and the projector of {s['embedding']['images']} test images): "
                     f"tensorboard --logdir {shlex.quote(str(self.out_dir))}")
        return "\n".join(lines)


def check_out_folder(out_dir: Path, run_dir: Path) -> None:
    """--out DIR: not inside the run's folder, other than its inspect/ (the default: it would mix the pictures
    with the run's own files), and new, empty or an inspection's (whose own files it replaces)."""
    resolved, run = out_dir.resolve(), run_dir.resolve()
    if resolved.is_relative_to(run) and resolved != run / "inspect":
        raise UserError(f"--out {str(out_dir)!r} is inside the run folder: leave --out out for "
                        f"{str(run_dir / 'inspect')!r}, or give a folder outside it")
    if out_dir.is_dir() and "embedding" not in previous_summary(out_dir) and any(
            e.name != LOCK_NAME and not e.name.startswith(STAGING) for e in out_dir.iterdir()):
        # an inspection replaces its own files (TensorBoard logs, numbered projector folders): not a stranger's
        raise UserError(f"--out {str(out_dir)!r} holds other files; give a new or empty folder, or one an "
                        "inspection wrote")


def check_writable_folder(out_dir: Path) -> None:
    """Refuse, before any work, a folder for the pictures that is a file or cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{str(out_dir)!r} is a file, not a folder; inspect writes its pictures into a folder of "
                        "that name: move the file away")
    where = out_dir if out_dir.exists() else out_dir.parent
    # a probe, not os.access: a read-only file system was called "no write permission"
    check_folder_writable(where, "folder", f"inspect writes its pictures into {str(out_dir)!r}")


def inspect_run(run_dir: Path, *, checkpoint: str | None = None, data_dir: str | Path | None = None,
                device: str | None = None, embedding_images: int = EMBEDDING_IMAGES,
                echo: Callable[[str], None] = lambda line: None, out_dir: Path | None = None) -> InspectReport:
    """Draw a saved run's model into `out_dir` (default RUN_DIR/inspect/) and its TensorBoard log; returns the
    numbers shown. `echo` is told of each stage (for progress)."""
    run_dir = Path(run_dir)
    run = load_run(run_dir, checkpoint, device)
    if out_dir is None:
        out_dir = run_dir / "inspect"
        refuse_links(run_dir, "inspect", writes_checkpoints=False)
    else:  # a run that cannot be written (a shared copy): its pictures elsewhere
        out_dir = Path(out_dir)
        check_out_folder(out_dir, run_dir)
    check_writable_folder(out_dir)
    test = run_test_split(run_dir, run.cfg, data_dir)
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"{str(out_dir)!r} cannot be written: {exc.strerror or exc}") from None
    # two inspections of one run: one removed the other's TensorBoard files while it wrote them (a traceback)
    lock = lock_run_dir(out_dir, "inspect folder")
    try:
        return _inspect(run_dir, run, test, out_dir, embedding_images, echo)
    finally:
        lock.close()


def _inspect(run_dir: Path, run, test, out_dir: Path, embedding_images: int,
             echo: Callable[[str], None]) -> InspectReport:
    checkpoint = run.name
    echo(f"inspect: scoring {len(test.labels):,} test images with {checkpoint}.pt (epoch {run.epoch})")
    split = TensorSplit.from_split(test, run.device, dtype_of(run.cfg))
    probs_t, features = predict_with_features(run.model, split.x, run.cfg.train.eval_batch_size,
                                              run.cfg.train.tta == "flip")
    probs, labels = probs_t.double().numpy(), test.labels
    predicted, confidence = probs.argmax(1), probs.max(1)
    correct = predicted == labels
    rel = reliability(confidence, correct)
    confusion = confusion_of(labels, predicted)
    per_class = per_class_accuracy(confusion)
    pairs = confused_pairs(confusion)
    wrong = confident_mistakes(probs, labels)
    name = run.title

    weights = weights_figure(run.model, split.x, test.images, labels, name)
    figures = {
        "weights": weights,
        "mistakes": mistakes_figure(test.images[wrong], labels[wrong].tolist(), predicted[wrong].tolist(),
                                    confidence[wrong].tolist(), wrong.tolist(),
                                    f"The {len(wrong)} most confident mistakes (of {int((~correct).sum())}), "
                                    f"most confident first: {name}"),
        "per_class": per_class_figure(per_class, pairs, float(correct.mean()), f"Per class: {name}"),
        "calibration": calibration_figure(rel, f"Reliability diagram: {name}"),
    }
    n_embed = min(embedding_images, len(labels))
    summary = {
        "run": str(run_dir), "checkpoint": checkpoint, "epoch": run.epoch, "model": run.cfg.model.name,
        "test_images": len(labels), "test_accuracy": float(correct.mean()), "ece": rel.ece,
        "nonfinite_predictions": rel.nonfinite,
        "calibration_bins": rel.rows(),
        "per_class_accuracy": dict(zip(CLASSES, per_class)),
        "confused_pairs": pairs,
        "mistakes": [{"index": int(i), "true": CLASSES[labels[i]], "predicted": CLASSES[predicted[i]],
                      "confidence": float(confidence[i])} for i in wrong],
        "embedding": {"images": n_embed, "dimensions": int(features.shape[1]), "tag": EMBEDDING_TAG,
                      "layer": "input of the last Linear layer (the penultimate layer's activations)"},
    }
    echo(f"inspect: drawing {', '.join(f'{key}.png' for key in figures)}")
    # written beside the last inspection's files, then put in their place: a Ctrl-C or a full disk midway left
    # some pictures of one checkpoint beside others (and summary.json) of another
    for stale in out_dir.glob(f"{STAGING}*"):  # a killed inspection's (the lock says none is running)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=out_dir))
        try:
            for key, figure in figures.items():
                save_figure(figure, staging / f"{key}.png", dpi=DPI)
            write_json(staging / "summary.json", summary)
            echo(f"inspect: writing the TensorBoard log and the projector ({n_embed:,} images)")
            _tensorboard(staging, list(figures), features[:n_embed], labels[:n_embed], predicted[:n_embed],
                         test.images[:n_embed], run.global_step)
            late = _put_in_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise UserError(f"{str(out_dir)!r} cannot be written: {exc.strerror or exc}") from None
    return InspectReport(out_dir, summary, run.notes + ([LATE_STOP] if late else []))


LATE_STOP = "the stop came as the new files were put in place: the inspection is complete"


STAGING = ".unfinished-"  # the folder inside inspect/ an inspection writes into before its files replace the last's


def _put_in_place(staging: Path, out_dir: Path) -> bool:
    """The new inspection's files in place of the last one's (`own_files`), all or none: the old ones are moved
    aside first and moved back if a move fails. A Ctrl-C or SIGTERM meanwhile is only noted (a signal handler
    runs in the main thread, whichever thread the signal reached); whether one came: the files are in place, the
    inspection is done."""
    came = []
    held = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            held[sig] = signal.signal(sig, lambda signum, frame: came.append(signum))
    except ValueError:  # not the main thread: no handlers to set
        pass
    try:
        aside = Path(tempfile.mkdtemp(prefix=STAGING, dir=out_dir))
        moved, placed = [], []
        try:
            for old in own_files(out_dir):
                os.replace(old, aside / old.name)
                moved.append(old.name)
            for new in staging.iterdir():
                os.replace(new, out_dir / new.name)
                placed.append(new.name)
        except OSError:
            for name in placed:  # the new files out again, the last inspection back as it was
                os.replace(out_dir / name, staging / name)
            for name in moved:
                os.replace(aside / name, out_dir / name)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
    return bool(came)


OUTPUTS = {"weights.png", "mistakes.png", "per_class.png", "calibration.png", "summary.json",
           "projector_config.pbtxt"}


def own_files(out_dir: Path) -> list[Path]:
    """What an inspection wrote in `out_dir`: its pictures, summary, TensorBoard logs and add_embedding's
    <step:05d>/<tag>/ folders (6 digits and more past step 99999) holding the projector alone; not its lock,
    nor anything else someone put there."""
    found = []
    for entry in sorted(out_dir.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if entry.name.isdigit() and {e.name for e in entry.iterdir()} <= {EMBEDDING_TAG}:
                found.append(entry)
        elif entry.name.startswith("events.out.tfevents.") or entry.name in OUTPUTS:
            found.append(entry)
    return found


def remove_inspection(out_dir: Path) -> bool:
    """An inspection's own files removed from `out_dir` (a resumed run's, whose checkpoint they no longer
    describe), under its lock; False where there was none, or another inspection is writing there."""
    try:
        with lock_run_dir(out_dir, "inspect folder"):
            found = own_files(out_dir)
            for entry in found:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return bool(found)
    except (UserError, OSError):
        return False


def weights_figure(model: nn.Module, x: torch.Tensor, images: np.ndarray, labels: np.ndarray, name: str):
    """What the first layer learned: an MLP's first-layer units as 28x28 images, or a CNN's first filters with
    the feature maps of both blocks for the first test image of each class."""
    if isinstance(model, SmallCNN):
        firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(len(CLASSES)) if (labels == c).any()]
        with torch.inference_mode():
            maps1, maps2 = (m.float().cpu().numpy() for m in model.feature_maps(x[firsts]))
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        return cnn_weights_figure(conv.weight.detach().float().cpu().numpy(), images[firsts],
                                  labels[firsts].tolist(), maps1, maps2, f"What the CNN learned: {name}")
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    units = linear.weight.shape[0]
    which = f"{units} unit{'s' * (units != 1)}" if units <= MAX_UNITS else f"the first {MAX_UNITS} of {units} units"
    return mlp_weights_figure(linear.weight[:MAX_UNITS].detach().float().cpu().numpy(),
                              f"What the MLP's first layer learned: {which}, each unit's 784 input weights as a "
                              f"28x28 image\n{name}")


def _tensorboard(out_dir: Path, pictures: list[str], features: torch.Tensor, labels: np.ndarray,
                 predicted: np.ndarray, images: np.ndarray, step: int) -> None:
    """A log in the new (empty) out_dir, so that TensorBoard shows one inspection, not a mix: the saved pictures,
    read back rather than drawn twice, and the embedding with labels and an image sprite."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(out_dir))
    try:
        for key in pictures:
            with Image.open(out_dir / f"{key}.png") as png:
                writer.add_image(f"inspect/{key}", np.asarray(png.convert("RGB")), step, dataformats="HWC")
        metadata = [[CLASSES[t], CLASSES[p], "yes" if t == p else "no"] for t, p in zip(labels, predicted)]
        # the sprite shows the images as stored: light clothes on black, in [0, 1]
        sprite = torch.from_numpy(images).unsqueeze(1).float().div(255)
        writer.add_embedding(features, metadata=metadata, metadata_header=["label", "predicted", "correct"],
                             label_img=sprite, global_step=step, tag=EMBEDDING_TAG)
    finally:
        writer.close()
