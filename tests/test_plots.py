"""The run's plots read well: whole epochs on the axis of a short run."""

from bionas.plots import training_figure


def test_training_curves_of_a_two_epoch_run_have_whole_epochs_on_the_axis():
    records = [{"stage": stage, "epoch": epoch, "train_loss": 2.0 - epoch, "train_accuracy": 0.5 + 0.2 * epoch,
                "val_accuracy": 0.4 + 0.2 * epoch} for stage in ("search", "retrain") for epoch in range(2)]
    fig = training_figure(records)
    axes = fig.get_axes()
    assert len(axes) == 4  # loss and accuracy of both stages
    for ax in axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks == [1, 2], (ax.get_title(), ticks)


def test_nothing_to_plot_gives_no_figure():
    assert training_figure([{"stage": "test", "test_accuracy": 0.9}]) is None
