"""The run recorder is apart from the training loop: one loop can feed several run folders."""

from __future__ import annotations

import csv

import torch

from fashionmlp.checkpoint import make_ema
from fashionmlp.config import config_from_dict
from fashionmlp.optim import build_optimizer
from fashionmlp.progress import Progress
from fashionmlp.recorder import Trainee
from fashionmlp.run import recorder_for, run_epochs, train
from fashionmlp.session import prepare

from helpers import cli, summary, tiny_config


def rows(run) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_one_loop_feeds_two_recorders(tiny_data, tmp_path):
    cfg = config_from_dict(tiny_config(tiny_data, train={"epochs": 2, "ema": 0.9}, data={"val_size": 64}))
    session = prepare(cfg)
    model = session.model
    trainee = Trainee(model, build_optimizer(cfg.optimizer, model.parameters()),
                      torch.Generator().manual_seed(cfg.seed), make_ema(model, cfg.train.ema))
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    recorders = [recorder_for(folder, session, trainee, None).start() for folder in folders]
    results = run_epochs(trainee, session, recorders, Progress(), None)
    assert [r.status for r in results] == ["completed", "completed"]
    alone = train(cfg, runs_dir=tmp_path / "alone")  # what `train` writes for the same config
    for folder in folders:
        s = summary(folder)
        assert s["status"] == "completed" and s["epochs"] == 2 and s["final"] == summary(alone.run_dir)["final"]
        assert rows(folder) == rows(alone.run_dir) and len(rows(folder)) == 2
        for name in ("config.yaml", "loss_curve.png", "checkpoints/last.pt", "checkpoints/best.pt"):
            assert (folder / name).is_file(), name
        assert list(folder.glob("events.out.tfevents.*"))
        state = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
        reference = torch.load(alone.run_dir / "checkpoints" / "last.pt", weights_only=True)
        for key, value in reference["model"].items():
            assert torch.equal(state["model"][key], value), key
        evaluated = cli("evaluate", folder)  # loadable by every other command
        assert evaluated.exit_code == 0, evaluated.output
        assert f"test accuracy {s['best']['test_accuracy']:.2%}" in evaluated.stdout
    extended = cli("train", "--resume", folders[1], "--epochs", 3)
    assert extended.exit_code == 0 and summary(folders[1])["epochs"] == 3, extended.output
