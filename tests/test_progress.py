"""The plain progress lines a bar prints off a terminal (metasft.progress)."""
from metasft.progress import Bar


def test_a_bar_whose_sizes_sum_to_its_total_only_up_to_rounding_ends_once_with_done(capsys):
    """The eval bar advances by float sizes: ten tenths sum to just under 1.0. It printed '100%'
    with time left and no 'done in' line at its close (seen on the re-sized tiny experiment)."""
    assert sum(0.1 for _ in range(10)) < 1.0  # the case
    bar = Bar("eval", 1.0, unit=None)          # stderr is captured: not a terminal, plain lines
    for _ in range(10):
        bar.update(0.1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("eval: 100%")] == [lines[-1]], lines
    assert ", done in " in lines[-1] and len(lines) == 10, lines  # 10% .. 90%, then the end
