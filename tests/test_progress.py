"""The progress bar off a terminal (`metasft.progress.Bar`): plain lines per tenth and one at the end."""
from metasft.progress import Bar


def test_a_bar_whose_pieces_sum_a_rounding_short_of_its_total_still_ends_done(capsys):
    """Ten updates of 0.1 sum to 0.9999999999999999, not 1.0 (the eval bar's pieces are float weights
    summed in another order than its total): the bar still ends with its "done in" line, and no line
    before it claims 100%."""
    assert sum([0.1] * 10) < 1.0
    bar = Bar("eval", 1.0, unit=None)
    for _ in range(10):
        bar.update(0.1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("eval: 100%, done in ")
    assert [l for l in lines if l.startswith("eval: 100%")] == lines[-1:]
    assert len(lines) == 10  # 10% .. 90%, then the end
