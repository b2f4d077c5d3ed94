"""Using a saved run: re-evaluate it on the test set, and predict classes of test images or image files."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fashionmlp.data import CLASSES, TensorSplit, normalize
from fashionmlp.device import dtype_of
from fashionmlp.engine import evaluate, predict_proba
from fashionmlp.errors import UserError
from fashionmlp.metrics import per_class_accuracy
from fashionmlp.plots import confusion_matrix, percent, prediction_grid
from fashionmlp.plots.common import loss_text
from fashionmlp.savedrun import WRITTEN_FILES, load_run, refuse_links, run_test_split
from fashionmlp.tracking import check_folder_writable, check_picture_format, save_figure, write_json


@dataclass
class EvaluationReport:
    loss: float
    accuracy: float
    per_class: list[float]
    confusion: list[list[int]]
    figure_path: Path
    text: str
    unsaved: str | None = None  # why the figure and JSON could not be written, if they could not
    notes: list[str] = field(default_factory=list)  # e.g. that best.pt was chosen on the test set


def format_confusion(confusion: list[list[int]]) -> str:
    """The matrix as text, each column headed by its whole class name, a word per line ("Ankle" over "boot":
    cut to 7 characters they read "Pullove" and "Ankle b")."""
    words = [c.split("/")[0].split(" ") for c in CLASSES]
    width = max(len(w) for name in words for w in name) + 1
    depth = max(len(name) for name in words)
    heads = [[""] * (depth - len(name)) + name for name in words]  # bottom-aligned over the numbers
    lines = [("true \\ predicted" if row == depth - 1 else "").ljust(16) + "".join(f"{h[row]:>{width}}" for h in heads)
             for row in range(depth)]
    for name, counts in zip(CLASSES, confusion):
        lines.append(f"{name:<16}" + "".join(f"{v:>{width}}" for v in counts))
    return "\n".join(lines)


def evaluate_run(run_dir: Path, *, checkpoint: str | None = None, data_dir: str | Path | None = None,
                 device: str | None = None) -> EvaluationReport:
    """Evaluate a run's checkpoint on the test set; writes confusion_matrix-<ckpt>.png and evaluation-<ckpt>.json."""
    run = load_run(run_dir, checkpoint, device)
    refuse_links(Path(run_dir), "evaluate", writes_checkpoints=False)
    checkpoint = run.name
    images = run_test_split(run_dir, run.cfg, data_dir)
    test = TensorSplit.from_split(images, run.device, dtype_of(run.cfg))
    result = evaluate(run.model, test, run.cfg.train.eval_batch_size, tta=run.cfg.train.tta == "flip")
    per_class = per_class_accuracy(result["confusion"])
    figure_path = Path(run_dir) / f"confusion_matrix-{checkpoint}.png"  # best and last: one each, as the JSON
    title = f"{run.title}: test\u00a0accuracy\u00a0{result['accuracy']:.2%}"  # no-break: "test" / "accuracy"
    json_path = Path(run_dir) / f"evaluation-{checkpoint}.json"
    unsaved = None
    try:  # the numbers are printed even where the run folder cannot be written (a read-only copy, say)
        save_figure(confusion_matrix(result["confusion"], title), figure_path, dpi=110)
        write_json(json_path, {"checkpoint": checkpoint, "epoch": run.epoch, "test_loss": result["loss"],
                               "test_accuracy": result["accuracy"],
                               "per_class_accuracy": dict(zip(CLASSES, per_class)), "confusion": result["confusion"]})
    except (OSError, UserError) as exc:  # UserError: a full disk (atomic_write says so)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        unsaved = (f"{figure_path.name} and {json_path.name} could not be written to {str(run_dir)!r} "
                   f"({why}); the results above are not saved")
    lines = [f"run {run_dir}  checkpoint {checkpoint}.pt (epoch {run.epoch})  {len(images.labels)} test images",
             f"test loss {loss_text(result['loss'])}   test accuracy {result['accuracy']:.2%}", "",
             "per-class accuracy:"]
    lines += [f"  {name:<12} {acc:7.2%}" for name, acc in zip(CLASSES, per_class)]
    lines += ["", "confusion matrix (rows: true class, columns: predicted):", format_confusion(result["confusion"])]
    return EvaluationReport(result["loss"], result["accuracy"], per_class, result["confusion"], figure_path,
                            "\n".join(lines), unsaved, run.notes)


NEARLY_BLACK = 0.1  # of white: below it a picture is pointed out, or (16/32-bit, float) scaled from its own range


def read_image(path: Path, invert: bool = False, warn: Callable[[str], None] = print) -> np.ndarray:
    """An image file -> (28, 28) uint8, light object on black as in Fashion-MNIST.

    Any bit depth is scaled by the smallest standard range that holds its values (float 0-1, 0-255, 0-65535), or
    from its own range where that would leave it nearly black (12-bit data in a 16-bit file), with a warning, as
    for a blank or nearly black picture; colour becomes luminance
    (ITU-R 601); transparent pixels are composited over black, Fashion-MNIST's background, after --invert
    (which flips the object's pixels only). Other sizes are resized (padded to a square first if they are not
    one), with a warning.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    where = f"--image {str(path)!r}"
    _check_image_path(path, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # far too big to be one garment
            with Image.open(path) as img:
                img.load()  # the first frame of an animation or multi-page file
                if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":  # a phone JPEG's preview: not frames
                    warn(f"warning: {where}: {img.n_frames} frames (an animation or a multi-page file); the first "
                         "is used")
                gray, alpha = _luminance_and_alpha(ImageOps.exif_transpose(img), where, warn)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{where}: more than {Image.MAX_IMAGE_PIXELS:,} pixels, too large to read "
                        "safely; crop or shrink it to the garment first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        hint = "; a NumPy array is not an image: save it as PNG first" if path.suffix.lower() in (".npy", ".npz") \
            else ""
        raise UserError(f"{where}: not an image file PIL can read ({why}){hint}") from None
    if invert:
        np.subtract(1.0, gray, out=gray)  # in place: a photo's float64 copies were gigabytes
    if alpha is not None:
        gray *= alpha
    _say_if_dark(gray, alpha, invert, where, warn)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).mean()
    if border > 0.5:
        warn(f"warning: {where}: its border is light ({border:.0%} of white on average) while Fashion-MNIST's "
             "garments are light on a black background; " + ("--invert made it so: the image may not need it"
                                                             if invert else
                                                             "a dark garment on a light background needs --invert"))
    if gray.shape != (28, 28):
        h, w = gray.shape
        how = ("resized" if h == w else "padded to a square with black (the garment shrinks: cropped to it, the "
               "image gives the model more to see) and resized")
        warn(f"warning: {where} is {w}x{h}; {how} to 28x28 (Fashion-MNIST's size)")
        side = max(h, w)
        square = np.zeros((side, side), dtype=np.float32)  # float32 as PIL's "F" takes it, without a float64 twin
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = gray
        del gray
        resample = Image.Resampling.BOX if side > 28 else Image.Resampling.BILINEAR  # BOX: area average
        gray = np.asarray(Image.fromarray(square, mode="F").resize((28, 28), resample), dtype=np.float64)
    return np.clip(np.rint(gray * 255), 0, 255).astype(np.uint8)


def _check_image_path(path: Path, where: str) -> None:
    """A UserError unless `path` is a file (a folder, a pipe, a dangling link, a missing file or a pattern)."""
    if path.is_dir():
        raise UserError(f"{where} is a directory; pass an image file (PNG, JPEG, TIFF ...)")
    if path.exists() and not path.is_file():  # a pipe or a device was called missing
        raise UserError(f"{where}: not a file but a pipe, device or socket; save the image to a file and pass that")
    if path.is_symlink() and not path.exists():  # a dangling or looping link was "no such file"
        raise UserError(f"{where}: a symbolic link to nothing (its target is missing, or it leads back to itself)")
    if not path.is_file():
        stdin = "; standard input is not read: pass an image file" if str(path) == "-" else ""
        pattern = ("; a pattern is expanded by the shell only unquoted, and each file then needs its own --image: "
                   "pass their folder instead" if any(c in path.name for c in "*?[") else "")
        raise UserError(f"{where}: no such file{stdin}{pattern}")


ROWS_AT_ONCE = 256  # rows of an 8-bit colour image turned into floats at a time


def _luminance_and_alpha(img, where: str, warn: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W) luminance in [0, 1] and, for images with transparency, (H, W) opacity in [0, 1] (else None)."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if not np.isfinite(values).all():
            raise UserError(f"{where}: the image holds NaN or infinite values")
        return _scaled(values, mode, where, warn), None
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if mode in ("1", "L") and not has_alpha:  # a gray PNG with a transparent gray level has alpha: RGBA below
        return np.asarray(img.convert("L"), dtype=np.float64) / 255, None
    pixels = np.asarray(img.convert("RGBA" if has_alpha else "RGB"))  # 8-bit; made float a band of rows at a time:
    gray = np.empty(pixels.shape[:2])  # a 48-megapixel photo as one float64 array (and its /255) was 2.3 GB
    alpha = np.empty(pixels.shape[:2]) if has_alpha else None
    for top in range(0, len(pixels), ROWS_AT_ONCE):
        band = pixels[top:top + ROWS_AT_ONCE].astype(np.float64) / 255
        gray[top:top + ROWS_AT_ONCE] = band[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's "L"
        if alpha is not None:
            alpha[top:top + ROWS_AT_ONCE] = band[..., 3]
    return gray, alpha


def _say_if_dark(gray: np.ndarray, alpha: np.ndarray | None, invert: bool, where: str,
                 warn: Callable[[str], None]) -> None:
    """A warning for a blank picture (transparent, black or one colour: every answer is a guess) or a nearly
    black one."""
    if gray.max() - gray.min() < 0.5 / 255:
        # a black garment on a transparent background composites to black on black: --invert draws it
        cutout = alpha is not None and not invert and float(alpha.max() - alpha.min()) > 0.5
        warn(f"warning: {where}: every pixel is the same ({gray.max():.0%} of white): a blank image; its "
             "prediction says nothing about a garment" + ("; a dark garment on a transparent background needs "
                                                          "--invert" if cutout else ""))
    elif gray.max() < NEARLY_BLACK:
        warn(f"warning: {where}: nearly black (its brightest pixel is {gray.max():.1%} of white); the garment "
             "may be too dark for the model to see")


def _scaled(values: np.ndarray, mode: str, where: str, warn: Callable[[str], None]) -> np.ndarray:
    """A 16-bit, 32-bit or float image's values -> [0, 1]: by the smallest standard range (float 0-1, 0-255,
    0-65535) that holds them, unless it would leave them nearly black (12-bit data in a 16-bit file, 0-300):
    then from their own range, with a warning."""
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0 and high <= 1.01:  # 0-1 with a rounding over 1 (1.0001 was read as 0-255: black)
        return np.minimum(values, 1.0)
    tops = (1.0, 255.0, 65535.0) if mode == "F" else (255.0, 65535.0)
    top = next((t for t in tops if low >= 0 and high <= t), None)
    if top is not None and (top == tops[0] or high >= top * NEARLY_BLACK or high == low):
        return values / top
    if high == low:  # nothing to scale: one value outside every range
        raise UserError(f"{where}: every pixel holds {low:g}, outside 0-255 and 0-65535: a blank image")
    if top is None:
        warn(f"warning: {where}: values {low:g} to {high:g} fit no standard range; scaled from that range to 0-255")
    else:
        guess = "; 12-bit data?" if mode != "F" and high < 4096 else ""
        warn(f"warning: {where}: values {low:g} to {high:g} would read nearly black by {top:g} (the brightest "
             f"{high / top:.1%} of white{guess}); scaled from their own range to 0-255")
    return (values - low) / (high - low)


# what a folder given to --image contributes: formats PIL reads (its registered extensions held save-only and
# stub ones, .pdf, .h5, and a catalog.pdf among the photos stopped the batch); hidden files (._x.png) are left out
IMAGE_SUFFIXES = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif",
                            ".tiff", ".webp", ".avif", ".jp2", ".j2k", ".jpx", ".qoi", ".pgm", ".pbm", ".ppm", ".pnm",
                            ".tga", ".ico"})


def image_files(paths: Sequence[Path]) -> tuple[list[Path], set[Path]]:
    """The --image values with each folder replaced by its image files (by their extensions: IMAGE_SUFFIXES;
    sorted by name), and which of them a folder gave; a folder was refused as "a directory", and a pattern had to
    be written out file by file."""
    files, in_folders = [], set()
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        try:
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())
        except OSError as exc:
            raise UserError(f"--image {str(path)!r}: the folder cannot be read ({exc.strerror or exc})") from None
        if not found:
            raise UserError(f"--image {str(path)!r}: a folder with no image files (named .png, .jpg, .tif ...)")
        files += found
        in_folders.update(found)
    return files, in_folders.difference(paths)  # a file named itself too is refused if it cannot be read


def _read_images(images: list[Path], in_folders: set[Path], invert: bool,
                 warn: Callable[[str], None]) -> tuple[list[Path], np.ndarray]:
    """The files read and their (N, 28, 28) uint8 pixels. A file named with --image that cannot be read is an
    error naming every such file (the first one's stopped the batch, hiding the others); one a folder gave is
    skipped with a warning (a folder's one damaged file stopped the predictions of all the others)."""
    read, pixels, problems, skipped = [], [], [], []
    for image in images:
        try:
            pixels.append(read_image(image, invert, warn))
            read.append(image)
        except UserError as exc:
            (skipped if image in in_folders else problems).append(str(exc))
    if len(problems) > 1:
        raise UserError(f"{len(problems)} of {len(images)} images cannot be read: " + "; ".join(problems))
    if problems:
        raise UserError(problems[0])
    if skipped and not read:
        raise UserError("no image file in the --image folder(s) can be read: " + "; ".join(skipped))
    for problem in skipped:
        warn(f"warning: {problem}: skipped (a file in a folder given with --image)")
    return read, np.stack(pixels)


def top_k(probs: torch.Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
    values, indices = probs.topk(k, dim=1)
    return [[(CLASSES[i], float(p)) for p, i in zip(v, ix)] for v, ix in zip(values.tolist(), indices.tolist())]


def predict_run(run_dir: Path, *, indices: list[int], images: list[Path] | None = None, invert: bool = False,
                grid: Path | None = None, checkpoint: str | None = None, data_dir: str | Path | None = None,
                device: str | None = None, warn: Callable[[str], None] = print) -> str:
    """Top-3 predictions as text; optionally a 16-image grid picture of the test set."""
    if grid is not None:
        check_figure_path(grid, "--grid")
        _not_a_run_file(grid, Path(run_dir))
    run = load_run(run_dir, checkpoint, device)
    for note in run.notes:
        warn(f"note: {note}")
    tta = run.cfg.train.tta == "flip"
    lines = []
    if images:  # every file read (and refused) before any prediction; then one batch
        images, pixels = _read_images(*image_files(images), invert, warn)
        x = normalize(torch.from_numpy(pixels)).to(run.device, dtype_of(run.cfg))
        for image, top in zip(images, top_k(predict_proba(run.model, x, tta=tta))):
            lines.append(_format_top(f"{image}", top))
    if indices or grid is not None:
        test = run_test_split(run_dir, run.cfg, data_dir)
        bad = [i for i in indices if not 0 <= i < len(test.labels)]
        if bad:
            raise UserError(f"--index {bad[0]}: out of range; allowed: 0 to {len(test.labels) - 1}")
        if indices:
            x = normalize(torch.from_numpy(test.images[indices])).to(run.device, dtype_of(run.cfg))
            for i, top in zip(indices, top_k(predict_proba(run.model, x, tta=tta))):
                lines.append(_format_top(f"test image {i} (true: {CLASSES[test.labels[i]]})", top))
        if grid is not None:
            chosen = list(range(min(16, len(test.labels))))
            x = normalize(torch.from_numpy(test.images[chosen])).to(run.device, dtype_of(run.cfg))
            probs = predict_proba(run.model, x, tta=tta).cpu()
            right = int((probs.argmax(1) == torch.from_numpy(test.labels[chosen])).sum())
            figure = prediction_grid(test.images[chosen], test.labels[chosen].tolist(), probs.argmax(1).tolist(),
                                     probs.max(1).values.tolist(),
                                     f"{run.title}: test images 0-{len(chosen) - 1}, {right} of {len(chosen)} "
                                     "right (wrong ones in red)")
            try:
                save_figure(figure, grid, dpi=100)
            except OSError as exc:
                raise UserError(f"--grid {str(grid)!r}: cannot be written ({exc.strerror or exc})") from None
            lines.append(f"grid of {len(chosen)} test images saved to {grid}")
    return "\n".join(lines)


def check_figure_path(path: Path, option: str) -> None:
    """A picture can be saved at `path`: a format matplotlib writes, in a folder that exists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    formats = sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())
    if not str(path) or str(path) == ".":  # typer makes '' the current folder
        raise UserError(f"{option} {str(path)!r}: no file name; give one such as grid.png")
    if path.is_dir():
        raise UserError(f"{option} {str(path)!r} is a directory; give a file name such as grid.png")
    if path.suffix.lower().lstrip(".") not in formats:
        raise UserError(f"{option} {str(path)!r}: " + (f"{path.suffix} is not a picture format" if path.suffix else
                        "a file name without an extension, which names the picture's format")
                        + f"; allowed: {', '.join('.' + f for f in formats)}")
    check_picture_format(path, option)
    if not path.parent.is_dir():
        raise UserError(f"{option} {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    # before the model and data load: an unwritable folder was found after them, the --index lines unprinted
    check_folder_writable(path.parent, f"{option} {str(path)!r}: the folder", hint="give a folder you can write")


def _not_a_run_file(path: Path, run_dir: Path) -> None:
    """--grid does not overwrite a picture or record of the run itself (its loss_curve.png, say)."""
    try:
        inside = path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return
    if inside in WRITTEN_FILES or inside.startswith(("inspect/", "checkpoints/")):
        raise UserError(f"--grid {str(path)!r} is the run's own {inside}; give another file name, e.g. "
                        f"{str(path.with_name('grid.png'))!r}")


def _format_top(what: str, top: list[tuple[str, float]]) -> str:
    return f"{what}: " + ", ".join(f"{name} {percent(p, 1)}" for name, p in top)
