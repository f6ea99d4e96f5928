"""The data axis: each config's batch split over devices gives the table of one device, up
to float reordering, for every layout of 4 devices, with and without batch norm, under
both batch-size strategies; ghost batches by hand."""

import jax
import numpy as np
import pytest

from jaxopt_lab import cli
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError

GRID = dict(optimizer=["momentum"], learning_rate=[0.01, 0.1], batch_size=[8, 16], seed=[0])


@pytest.mark.parametrize("batchnorm", [False, True])
def test_every_layout_of_four_devices_gives_the_one_device_table(batchnorm):
    spec = dict(dataset="digits", model="mlp", model_options={"hidden": (8,), "batchnorm": batchnorm})
    spec.update(steps=20, eval_every=10)
    alone = S.sweep(spec, S.Grid(**GRID), strategy="bucket", devices=jax.devices()[:1], progress=False).table
    # (configs x data) layouts of 4 devices, each under a strategy: mask runs both batch sizes
    # in one program, bucket one batch size per program (here the larger, to keep it short)
    for strategy, data_parallel in (("mask", 1), ("mask", 2), ("bucket", 2), ("bucket", 4)):
        grid = S.Grid(**{**GRID, "batch_size": GRID["batch_size"] if strategy == "mask" else [16]})
        table = S.sweep(spec, grid, strategy=strategy, data_parallel=data_parallel, progress=False).table
        expected = alone[alone["batch_size"].isin(grid.axes["batch_size"])].reset_index(drop=True)
        for column in ("train_loss", "test_loss", "test_accuracy"):
            np.testing.assert_allclose(
                table[column], expected[column], rtol=2e-6, atol=1e-7, err_msg=f"{strategy} {data_parallel}"
            )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(data_parallel=3), "data_parallel=3 is invalid for 4 devices: expected one of 1, 2, 4"),
        (dict(data_parallel=0), "data_parallel=0 is invalid: expected a positive integer"),
        (dict(data_parallel=4, grid=dict(batch_size=[6])), "data_parallel=4 is invalid for batch_size=6"),
    ],
)
def test_bad_data_parallel_is_one_line_and_writes_nothing(tmp_path, kwargs, message):
    grid = S.Grid(**kwargs.pop("grid", {"learning_rate": [0.1]}))
    with pytest.raises(InputError, match=message):
        S.sweep({"dataset": "digits"}, grid, out=tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_data_parallel_from_the_command(tmp_path, capsys):
    argv = ["sweep", "--dataset", "digits", "--hidden", "8", "--steps", "10", "--eval-every", "5"]
    argv += ["--optimizer", "sgd", "--lr", "0.1", "--batch-size", "12", "--seeds", "1", "--no-progress"]
    assert cli.main([*argv, "--data-parallel", "8", "--out", str(tmp_path / "bad")]) == 2
    assert "data_parallel=8 is invalid for 4 devices" in capsys.readouterr().err  # the suite's 4
    assert not (tmp_path / "bad").exists()
