"""Tests for jaxopt_lab.outputs.plots: the heatmap's matrix by hand, what the figures mark, the files."""

import math
import struct

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from jaxopt_lab.outputs import plots

NAN = math.nan
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (optimizer, batch_size, lr, momentum, seed): test loss at steps 1, 2, 3 (NaN once diverged).
_RUNS = {
    ("sgd", 8, 0.01, NAN, 0): [2.0, 1.5, 1.6],
    ("sgd", 8, 0.01, NAN, 1): [2.0, 1.7, 1.3],
    ("sgd", 8, 0.1, NAN, 0): [1.0, 0.8, 0.9],
    ("sgd", 8, 0.1, NAN, 1): [1.2, 0.6, 0.7],
    ("sgd", 32, 0.01, NAN, 0): [2.5, 2.0, 1.9],
    ("sgd", 32, 0.01, NAN, 1): [2.4, 2.2, 2.1],
    ("sgd", 32, 0.1, NAN, 0): [1.1, 0.9, NAN],  # diverged at step 3
    ("sgd", 32, 0.1, NAN, 1): [1.0, 0.9, 0.85],
    ("adam", 8, 0.01, NAN, 0): [0.9, 0.5, 0.4],
    ("adam", 8, 0.01, NAN, 1): [0.8, 0.6, 0.6],
    ("adam", 32, 0.1, NAN, 0): [0.7, 0.65, 0.66],
    # momentum's beta is a nuisance hyperparameter: each cell shows its best setting.
    ("momentum", 8, 0.1, 0.5, 0): [1.0, 0.9, 0.95],
    ("momentum", 8, 0.1, 0.9, 0): [0.8, 0.7, 0.75],
    ("momentum", 8, 0.01, 0.5, 0): [NAN, NAN, NAN],
    ("momentum", 8, 0.01, 0.9, 0): [1.3, 1.2, 1.25],
    ("momentum", 32, 0.01, 0.5, 0): [1.5, NAN, NAN],
    ("momentum", 32, 0.01, 0.9, 0): [NAN, NAN, NAN],
    ("momentum", 32, 0.1, 0.9, 0): [1.1, 1.0, 1.05],
}


def _table(runs=None):
    rows = []
    for config_id, ((opt, b, lr, beta, seed), losses) in enumerate((runs or _RUNS).items()):
        for step, loss in enumerate(losses, start=1):
            rows.append(
                dict(
                    config_id=config_id,
                    optimizer=opt,
                    learning_rate=lr,
                    batch_size=b,
                    seed=seed,
                    beta=beta,
                    step=step,
                    examples_seen=step * b,
                    train_loss=loss,
                    test_loss=loss,
                    test_accuracy=1.0 - loss / 4.0,
                    diverged=bool(np.isnan(loss)),
                )
            )
    return pd.DataFrame(rows)


# By hand: min over steps, mean over seeds, best over beta, NaN when diverged or not run.
_EXPECTED = {
    "sgd": [[(1.5 + 1.3) / 2, (0.8 + 0.6) / 2], [(1.9 + 2.1) / 2, NAN]],
    "momentum": [[1.2, 0.7], [NAN, 1.0]],
    "adam": [[(0.4 + 0.6) / 2, NAN], [NAN, 0.65]],
}


def test_heatmap_data_by_hand():
    got = plots.heatmap_data(_table())
    assert list(got) == ["sgd", "momentum", "adam"]  # the canonical optimizer order
    for opt, expected in _EXPECTED.items():
        assert got[opt].index.tolist() == [8, 32]
        assert got[opt].columns.tolist() == [0.01, 0.1]
        np.testing.assert_allclose(got[opt].to_numpy(), expected, rtol=1e-12, err_msg=opt)


def test_heatmap_data_maximizes_accuracy():
    got = plots.heatmap_data(_table(), metric="test_accuracy")
    for opt, expected in _EXPECTED.items():
        # accuracy = 1 - loss / 4, so its max over steps is 1 - (min loss) / 4.
        np.testing.assert_allclose(
            got[opt].to_numpy(), 1.0 - np.array(expected) / 4.0, rtol=1e-12, err_msg=opt
        )


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


def _panels(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def _rectangles(ax, edgecolor=None, facecolor=None):
    found = []
    for patch in ax.patches:
        if not isinstance(patch, Rectangle):
            continue
        if edgecolor and (patch.get_fill() or patch.get_edgecolor() != to_rgba(edgecolor)):
            continue
        if facecolor and (not patch.get_fill() or patch.get_facecolor() != to_rgba(facecolor)):
            continue
        x, y = patch.get_xy()
        found.append((round(y + patch.get_height() / 2), round(x + patch.get_width() / 2)))
    return sorted(found)


def test_heatmap_writes_png_and_marks_best_and_diverged_cells(tmp_path):
    path = tmp_path / "heatmap.png"
    fig = plots.heatmap(_table(), path)
    width, height = _png_size(path)
    assert (width, height) == (round(fig.get_figwidth() * 150), round(fig.get_figheight() * 150))
    panels = _panels(fig)
    assert sorted(panels) == ["adam", "momentum", "sgd"]
    # (row = batch size index, column = lr index) of the best lr per batch size, by hand.
    best = {"sgd": [(0, 1), (1, 0)], "momentum": [(0, 1), (1, 1)], "adam": [(0, 0), (1, 1)]}
    diverged = {"sgd": [(1, 1)], "momentum": [(1, 0)], "adam": []}
    for opt, ax in panels.items():
        assert _rectangles(ax, edgecolor="#d62728") == best[opt], opt
        assert _rectangles(ax, facecolor="#e0e0e0") == diverged[opt], opt
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-2", "1e-1"]
    assert [t.get_text() for t in panels["sgd"].get_yticklabels()] == ["8", "32"]
    assert sorted(t.get_text() for t in panels["sgd"].texts) == ["0.7", "1.4", "2", "×"]
    assert fig.axes[-1].get_ylabel() == "test loss"  # the colorbar


def test_curves_draw_the_best_lr_of_each_batch_size(tmp_path):
    path = tmp_path / "curves.png"
    fig = plots.curves(_table(), path)
    assert _png_size(path) == (round(fig.get_figwidth() * 150), round(fig.get_figheight() * 150))
    panels = _panels(fig)
    labels = {opt: [t.get_text() for t in ax.get_legend().get_texts()] for opt, ax in panels.items()}
    assert labels == {
        "sgd": ["B=8, lr=1e-1", "B=32, lr=1e-2"],
        "momentum": ["B=8, lr=1e-1, beta=0.9", "B=32, lr=1e-1, beta=0.9"],
        "adam": ["B=8, lr=1e-2", "B=32, lr=1e-1"],
    }
    sgd = panels["sgd"]
    assert sgd.get_xscale() == "log"
    line = sgd.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [8, 16, 24])
    np.testing.assert_allclose(line.get_ydata(), [1.1, 0.7, 0.8], rtol=1e-12)
    # The band spans the seeds' min and max at each point.
    band = [c for c in sgd.collections if isinstance(c, PolyCollection)][0]
    vertices = band.get_paths()[0].vertices
    at_16 = sorted({round(y, 12) for x, y in vertices if x == 16})
    assert at_16 == [0.6, 0.8]


def test_all_diverged_panel_single_panels_and_all_diverged_table(tmp_path):
    runs = dict(_RUNS)
    runs[("rmsprop", 8, 1.0, NAN, 0)] = [NAN, NAN, NAN]
    fig = plots.curves(_table(runs), tmp_path / "c.png")
    ax = _panels(fig)["rmsprop"]
    assert [t.get_text() for t in ax.texts] == ["all runs diverged"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["B=8: all lrs diverged"]
    plots.heatmap(_table(runs), tmp_path / "h.png")

    dead = _table({k: [NAN, NAN, NAN] for k in list(_RUNS)[:4]})
    plots.heatmap(dead, tmp_path / "dead_h.png")
    plots.curves(dead, tmp_path / "dead_c.png")

    one = _table({("adam", 16, 3e-4, NAN, 0): [1.0, 0.5, 0.7]})
    assert plots.heatmap_data(one)["adam"].to_numpy().tolist() == [[0.5]]
    plots.heatmap(one, tmp_path / "one_h.png")
    plots.curves(one, tmp_path / "one_c.png")
    for name in ("c", "h", "dead_h", "dead_c", "one_h", "one_c"):
        width, height = _png_size(tmp_path / f"{name}.png")
        assert width >= 600 and height >= 300, name


def test_output_format_follows_the_suffix_and_folders_are_made(tmp_path):
    path = tmp_path / "figs" / "heatmap.svg"
    plots.heatmap(_table(), path)
    assert path.read_bytes().lstrip().startswith(b"<?xml")


def test_figures_only_when_no_path():
    fig = plots.curves(_table())
    assert len(fig.axes) == 3


@pytest.mark.parametrize(
    "value, label",
    [
        (1e-3, "1e-3"),
        (0.0031622776601683794, "3.2e-3"),
        (1.0, "1"),
        (0.5, "5e-1"),
        (3.0, "3"),
        (10.0, "1e1"),
        (1.26e-4, "1.3e-4"),
    ],
)
def test_format_lr(value, label):
    assert plots.format_lr(value) == label


def test_lr_labels_stay_distinct():
    runs = {("sgd", 8, lr, NAN, 0): [1.0, 0.9] for lr in (1e-3, 1.04e-3, 1e-2)}
    fig = plots.heatmap(_table(runs))
    labels = [t.get_text() for t in _panels(fig)["sgd"].get_xticklabels()]
    assert labels == ["1e-3", "1.04e-3", "1e-2"]


def test_bad_metric():
    with pytest.raises(ValueError, match=r"metric='loss' is invalid: expected one of 'test_loss'"):
        plots.heatmap(_table(), metric="loss")


def test_an_outlier_does_not_flatten_the_colour_scale_and_is_marked(tmp_path):
    """Adam at lr 100 reaches a loss of 2.5e6 beside losses near 1: the scale stops at
    Tukey's fence (in log10) and the cell beyond it is marked."""
    runs = {
        ("adam", 8, lr, NAN, 0): [loss]
        for lr, loss in [(1e-3, 1.2), (1e-2, 0.9), (1e-1, 1.0), (1.0, 1.5), (10.0, 2.0), (100.0, 2.5e6)]
    }
    fig = plots.heatmap(_table(runs), tmp_path / "h.png")
    ax = _panels(fig)["adam"]
    logs = np.log10([1.2, 0.9, 1.0, 1.5, 2.0, 2.5e6])
    q1, q3 = np.percentile(logs, [25, 75])
    vmax = ax.images[0].norm.vmax
    assert vmax == pytest.approx(10 ** (q3 + 1.5 * (q3 - q1)))
    assert 2.0 < vmax < 100  # the low end keeps its contrast
    marks = [t for t in ax.texts if t.get_text() == "▲"]
    assert [round(m.get_position()[0] - 0.3) for m in marks] == [5]  # only lr=100
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "▲ beyond the colour scale (an outlier)" in legend
    # without an outlier nothing is marked and the scale spans the values
    fig = plots.heatmap(_table(dict(list(runs.items())[:5])))
    ax = _panels(fig)["adam"]
    assert not [t for t in ax.texts if t.get_text() == "▲"]
    assert ax.images[0].norm.vmax == pytest.approx(2.0)


@pytest.mark.parametrize("loss", [0.02653655596077442, 1.0, 3.7])
def test_a_single_cell_draws_with_its_own_value_on_the_scale(loss):
    # 10 ** log10(0.0265...) rounds below the value itself: the fence must not cross it
    fig = plots.heatmap(_table({("adam", 8, 0.01, NAN, 0): [loss]}))
    norm = _panels(fig)["adam"].images[0].norm
    assert norm.vmin <= loss <= norm.vmax


def _measured_table():
    """``_table()`` with a measurement column after the metrics: sharpness = 10 * loss + config_id,
    and steps_to_target per config = 3 - its best loss (NaN for a config that diverged)."""
    table = _table()
    table["sharpness"] = 10.0 * table["test_loss"] + table["config_id"]
    best = table.groupby("config_id")["test_loss"].transform("min")
    table["steps_to_target"] = (3.0 - best).where(~table.groupby("config_id")["diverged"].transform("any"))
    table["examples_to_target"] = table["steps_to_target"] * table["batch_size"]
    return table


def test_curves_of_a_measurement_follow_the_best_lr_by_the_default_metric(tmp_path):
    """sharpness has no best: the lines are those the test-loss curves draw, with their
    sharpness as y, here against steps, or with a target those of the fewest steps to it;
    a measurement is no hyperparameter."""
    table = _measured_table().drop(columns=["steps_to_target", "examples_to_target"])
    fig = plots.curves(table, tmp_path / "sharpness.png", metric="sharpness", x="step")
    sgd = _panels(fig)["sgd"]
    assert [t.get_text() for t in sgd.get_legend().get_texts()] == ["B=8, lr=1e-1", "B=32, lr=1e-2"]
    line = sgd.get_lines()[0]  # sgd, B=8, lr 0.1: configs 2 and 3
    np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
    expected = [
        (10 * 1.0 + 2 + 10 * 1.2 + 3) / 2,
        (10 * 0.8 + 2 + 10 * 0.6 + 3) / 2,
        (10 * 0.9 + 2 + 10 * 0.7 + 3) / 2,
    ]
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
    assert sgd.get_xlabel() == "step"
    assert "sharpness" not in plots.tables_lib.hyperparameter_columns(table)
    # With a target the configs stop there: the best lr is the one with the fewest steps
    # (sgd, B=8: lr 0.01 needs (1.5 + 1.7) / 2 steps, lr 0.1 (2.2 + 2.4) / 2).
    fig = plots.curves(_measured_table(), metric="sharpness")
    sgd = _panels(fig)["sgd"]
    assert [t.get_text() for t in sgd.get_legend().get_texts()][0] == "B=8, lr=1e-2"
    assert "best by steps to target" in fig.get_suptitle()


def test_heatmap_of_a_summary_column_by_hand(tmp_path):
    """steps_to_target: the summary's value per config, mean over seeds, best (smallest) over
    beta; a cell where a seed never reached it (NaN) is missing, not best."""
    table = _measured_table()
    got = plots.heatmap_data(table, metric="steps_to_target")
    sgd_8_01 = ((3 - 1.5) + (3 - 1.3)) / 2
    np.testing.assert_allclose(got["sgd"].loc[8, 0.01], sgd_8_01, rtol=1e-12)
    np.testing.assert_allclose(got["momentum"].loc[8, 0.1], 3 - 0.9, rtol=1e-12)  # beta 0.5: fewer steps
    assert np.isnan(got["sgd"].loc[32, 0.1])  # seed 0 diverged
    fig = plots.heatmap(table, tmp_path / "steps.png", metric="steps_to_target")
    assert "Steps to target" in fig.get_suptitle() and "per config" in fig.get_suptitle()
    final = plots.heatmap_data(table, metric="sharpness")  # a measurement: its last point's value
    np.testing.assert_allclose(final["adam"].loc[32, 0.1], 10 * 0.66 + 10, rtol=1e-12)
    with pytest.raises(ValueError, match="metric='nope' is invalid: expected one of .*'steps_to_target'"):
        plots.heatmap(table, metric="nope")
